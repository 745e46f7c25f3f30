"""Typed configuration schemas: what each section holds, its types and defaults.

The dataclasses are plain Python: the library takes them as arguments and never imports Hydra.
``hydra.glue.register_configs()`` hands them to Hydra's ConfigStore, so YAML options in ``conf/``
inherit a schema and a misspelt key or a wrong type fails at compose time. The rules between the
fields are elsewhere: the speculative setting's in ``spec_rules``, the whole run's in ``config.rules``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

DEMO_DRAFT = "builtin:demo"
DEMO_TARGET = "builtin:demo-target"
LONG_PROMPTS = ("refuse", "skip")  # what bench.long_prompts takes


class Mode(str, Enum):
    """What the serve recipe does once the draft is ready."""

    serve = "serve"
    bench = "bench"
    check = "check"


@dataclass
class AlgorithmConfig:
    """One speculative algorithm as SGLang names it.

    Attributes:
        name: value of ``--speculative-algorithm``; ``None`` serves the target without speculation.
        architecture: the ``config.json`` architecture SGLang dispatches on for this algorithm.
        needs_draft: whether ``--speculative-draft-model-path`` is required.
        uses_token_map: whether the algorithm reads ``--speculative-token-map`` (EAGLE-3 ignores it).
    """

    name: str | None = "EAGLE3"
    architecture: str | None = "LlamaForCausalLMEagle3"
    needs_draft: bool = True
    uses_token_map: bool = False


@dataclass
class DraftConfig:
    """Where the drafter comes from and how it is prepared.

    The resolver detects the layout itself: the presets (``conf/draft/*.yaml``) differ only in their
    defaults and comments.

    Attributes:
        path: run dir, ``epoch_E_step_S`` dir, its ``model/`` or ``model/consolidated/``, a legacy
            dir with ``draft_model.pt``, a hub id ``org/name``, or ``builtin:demo``.
        revision: hub revision, passed through for hub ids.
        export_dir: where to write the servable export; ``None`` uses the content-keyed cache.
        aux_layer_ids: target layers whose hidden states the draft was trained on, when they were
            not the defaults (Automodel does not record a custom choice in ``config.json``).
        allow_unsafe_pickle: let a legacy ``draft_model.pt`` be unpickled with ``weights_only=False``.
            Only for files you trust: unpickling runs arbitrary code.
        config: the draft's config JSON, for checkpoints that keep it elsewhere (a SpecForge training
            checkpoint: the ``--draft-config`` it was trained with; by default the path it recorded).
    """

    path: str | None = None
    revision: str | None = None
    export_dir: str | None = None
    aux_layer_ids: list[int] | None = None
    allow_unsafe_pickle: bool = False
    config: str | None = None


@dataclass
class TargetConfig:
    """The target model: a local HF directory or a hub id.

    Unset (``None``) with the demo draft means the built-in demo target (``config.rules.target_path``);
    exporting a draft needs no target, serving does.
    """

    path: str | None = None
    revision: str | None = None


@dataclass
class SpecConfig:
    """The speculative knobs sweeps turn.

    Give steps and topk together, or nothing (SGLang chooses). ``num_draft_tokens`` may be left
    unset with them: it is then ``steps + 1`` for a chain (topk 1) and the full tree
    ``steps * topk + 1`` capped at ``max_draft_tokens`` otherwise (``spec_rules.resolve_spec``).

    ``adaptive`` runs SGLang's adaptive mode (``--speculative-adaptive``, SGLang >= 0.5.11): chains
    only (topk 1), the number of steps changing at run time among the candidates of
    ``adaptive_config`` (a JSON file, ``--speculative-adaptive-config``; SGLang's own defaults
    without one). ``num_steps`` is then optional: the steps it starts with, one of the candidates.
    """

    num_steps: int | None = None
    topk: int | None = None
    num_draft_tokens: int | None = None
    max_draft_tokens: int = 16
    adaptive: bool = False
    adaptive_config: str | None = None


@dataclass
class SGLangConfig:
    """SGLang server arguments; field names mirror ``ServerArgs``.

    ``None`` leaves SGLang's own default. ``extra_args`` is appended verbatim.
    ``port: 0`` picks a free port at launch. ``release`` builds the command for that SGLang release
    (another machine's, e.g. ``0.5.23``) instead of the installed one; serving checks it is the installed one.
    ``disable_prefill_cuda_graph`` turns the prefill-phase (piecewise) CUDA graph off, spelt as each release does.
    """

    host: str = "127.0.0.1"
    port: int = 30000
    tp_size: int = 1
    dtype: str | None = None
    mem_fraction_static: float | None = None
    attention_backend: str | None = None
    cuda_graph_max_bs: int | None = None
    cuda_graph_bs: list[int] | None = None
    max_running_requests: int | None = None
    context_length: int | None = None
    disable_cuda_graph: bool = False
    disable_prefill_cuda_graph: bool = False
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    api_key: str | None = None
    nnodes: int = 1
    node_rank: int = 0
    dist_init_addr: str | None = None
    log_level: str | None = None
    extra_args: list[str] = field(default_factory=list)
    python: str | None = None
    release: str | None = None
    ready_timeout_s: float = 900.0
    stop_timeout_s: float = 30.0


class Objective(str, Enum):
    """What a sweep ranks settings by: output tokens/s, or goodput within ``bench.slo``'s goals."""

    tok_per_s = "tok_per_s"
    goodput = "goodput"


@dataclass
class SLOConfig:
    """Service-level goals: bounds on the 99th percentiles of a level's streaming latencies (seconds).

    ``None`` leaves a latency unbounded. A request is *good* when its time to first token, its time per
    output token and every gap between its chunks are within the bounds; a level meets the goals when
    the p99 of each is, no request failed and the load did not saturate the server (``bench.metrics``).
    """

    ttft_s: float | None = None
    itl_s: float | None = None
    tpot_s: float | None = None


@dataclass
class BenchConfig:
    """Benchmark workload (``mode=bench``).

    One server measures every level: each ``temperature`` at each ``concurrency``, with
    ``num_prompts`` requests (at least twice the concurrency) of ``max_new_tokens`` tokens each.
    The sweeper's objective is tokens/s at ``objective_concurrency`` and ``objective_temperature``
    (default: the first of each list). Before its server starts, a point waits up to
    ``gpu_free_wait_s`` for processes already on the GPU to leave: a previous server can hold its
    memory for a few seconds after it was stopped.

    ``gpu_pool`` lists the GPUs (indices or UUIDs, as ``CUDA_VISIBLE_DEVICES`` takes them) that the
    points of a sweep share on this host; each point leases ``sglang.tp_size`` of them for its server's
    life (``automodel_spec/serve/gpu_pool.py``). Unset: ``CUDA_VISIBLE_DEVICES``, else every GPU that
    ``nvidia-smi`` lists, else no pinning (no GPU found).

    ``servers_per_gpu`` lets that many points' servers share one GPU in a parallel sweep
    (``+launcher=parallel``): they start side by side and each is measured alone, beside idle servers
    only (``bench/placement.py``); for small models on a large GPU, where a server's start is most of a
    point's time. Each server then needs ``sglang.mem_fraction_static`` of at most 0.88 / servers_per_gpu
    (at most 88 servers: each keeps at least 1% of the GPU's memory).
    SGLang takes that fraction of the memory free when the server starts, less what is in use after it
    loaded its weights (other servers' weights loaded meanwhile included), so sharing servers size
    their memory one at a time (``bench/placement.py``), and a server starting beside others gets a
    smaller KV cache: a level whose requests it cannot hold at once fails the point (``bench/capacity.py``).

    ``reference`` computes the draft's reference accept length without SGLang after the point's
    server stops (``automodel_spec.bench.reference``; needs ``transformers``) and holds each temperature-0
    level's served accept length against it; unset (auto) computes it where it costs about a minute
    or less: on a CUDA GPU, when target parameters x prompts x ``max_new_tokens`` <= 1e12
    (``reference.AUTO_COST_LIMIT``).
    ``expected_accept_length`` (the accept length measured in training) also fails the verdict when
    the reference falls below it: the check that catches aux layer ids lost on the way.

    Every request is streamed (``/generate`` with ``"stream": true``), so each level reports time to first
    token, inter-token latency and time per output token at p50 / p90 / p99 (``bench/stream.py``).

    ``request_rate`` adds open-loop levels beside the concurrency levels: requests arrive as a Poisson
    process of that many requests/s (seeded by ``seed``), ``num_prompts`` of them, or fewer when
    ``duration_s`` (seconds of arrivals a level) runs out first; ``max_concurrency`` caps the requests in
    flight (the others wait in the client, and the wait is recorded). A level whose queue grows without
    bound is reported as saturated (``bench/open_loop.py``).

    ``phases`` measures one load that changes, instead of the levels: a list of phases run back to back
    on one server without a restart or a cache flush, each ``c<N>`` (``N`` requests in flight, closed loop)
    or ``r<R>`` (``R`` requests/s, open loop), e.g. ``[c1,c8,c32,c1]``; each phase has ``num_prompts``
    requests (or ``duration_s`` of arrivals) and is reported alone and in the whole (``bench/phases.py``).

    ``slo`` sets the service-level goals; ``objective`` what sweeps rank by (the winners, the presets, the
    Optuna sweeper's objective): ``tok_per_s`` or ``goodput`` (requests/s served within the goals).
    ``long_prompts`` says what becomes of a prompt that, with ``max_new_tokens``, does not fit the target's
    context (SGLang refuses it): ``refuse`` (before any server starts) or ``skip`` (left out, counted).
    """

    prompts: str | None = None
    num_prompts: int = 16
    concurrency: list[int] = field(default_factory=lambda: [1])
    max_new_tokens: int = 128
    temperature: list[float] = field(default_factory=lambda: [0.0])
    warmup_requests: int = 2
    seed: int = 0
    baseline: bool = True
    request_timeout_s: float = 600.0
    name: str = "sweep"
    objective_concurrency: int | None = None
    objective_temperature: float | None = None
    gpu_free_wait_s: float = 30.0
    gpu_pool: list[str] | None = None
    servers_per_gpu: int = 1
    reference: bool | None = None
    expected_accept_length: float | None = None
    request_rate: list[float] | None = None
    duration_s: float | None = None
    max_concurrency: int | None = None
    phases: list[str] | None = None
    slo: SLOConfig = field(default_factory=SLOConfig)
    objective: Objective = Objective.tok_per_s
    long_prompts: str = "refuse"


@dataclass
class ServeConfig:
    """The whole run, as the serve and export recipes compose it."""

    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    draft: DraftConfig = field(default_factory=DraftConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    spec: SpecConfig = field(default_factory=SpecConfig)
    sglang: SGLangConfig = field(default_factory=SGLangConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    mode: Mode = Mode.serve
    print_only: bool = False
    cache_dir: str | None = None
    output_dir: str | None = None
