"""Typed configuration schemas and the cross-field rules between them.

The dataclasses are plain Python: the library takes them as arguments and never imports Hydra.
``hydra_glue.register_configs()`` hands them to Hydra's ConfigStore, so YAML options in ``conf/``
inherit a schema and a misspelt key or a wrong type fails at compose time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from automodel_spec.errors import ConfigError
from automodel_spec.sglang_options import MANAGED_FLAGS, applicable_release

DEMO_DRAFT = "builtin:demo"
DEMO_TARGET = "builtin:demo-target"


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

    Unset (``None``) with the demo draft means the built-in demo target (see ``target_path``);
    exporting a draft needs no target, serving does.
    """

    path: str | None = None
    revision: str | None = None


@dataclass
class SpecConfig:
    """The speculative knobs sweeps turn.

    Give steps and topk together, or nothing (SGLang chooses). ``num_draft_tokens`` may be left
    unset with them: it is then ``steps + 1`` for a chain (topk 1) and the full tree
    ``steps * topk + 1`` capped at ``max_draft_tokens`` otherwise.

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


def resolve_spec(spec: SpecConfig) -> SpecConfig:
    """``spec`` with ``num_draft_tokens`` derived when steps and topk are given without it.

    In adaptive mode topk is 1 and draft tokens ``steps + 1`` (SGLang sets them so).
    """
    if spec.adaptive and spec.num_steps is not None and spec.topk in (None, 1):
        return replace(spec, topk=1, num_draft_tokens=spec.num_draft_tokens or spec.num_steps + 1)
    if spec.num_steps is None or spec.topk is None or spec.num_draft_tokens is not None:
        return spec
    if spec.topk == 1:
        tokens = spec.num_steps + 1
    else:
        tokens = min(spec.num_steps * spec.topk + 1, max(spec.max_draft_tokens, spec.num_steps + 1))
    return replace(spec, num_draft_tokens=tokens)


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
    life (``automodel_spec/gpu_pool.py``). Unset: ``CUDA_VISIBLE_DEVICES``, else every GPU that
    ``nvidia-smi`` lists, else no pinning (no GPU found).

    ``servers_per_gpu`` lets that many points' servers share one GPU in a parallel sweep
    (``+launcher=parallel``): they start side by side and each is measured alone, beside idle servers
    only (``bench/placement.py``); for small models on a large GPU, where a server's start is most of a
    point's time. Each server then needs ``sglang.mem_fraction_static`` of at most 0.9 / servers_per_gpu.

    ``reference`` computes the draft's reference accept length without SGLang after the point's
    server stops (``automodel_spec.reference``; needs ``transformers``) and holds each temperature-0
    level's served accept length against it; unset (auto) computes it where it costs about a minute
    or less: on a CUDA GPU, when target parameters x prompts x ``max_new_tokens`` <= 1e12
    (``reference.AUTO_COST_LIMIT``).
    ``expected_accept_length`` (the accept length measured in training) also fails the verdict when
    the reference falls below it: the check that catches aux layer ids lost on the way.
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


# Upper bounds of the speculative knobs. A drafted token is accepted only when every one before it was,
# so the accepted length grows ever slower with steps: published EAGLE-3 settings use at most 8 steps,
# SGLang picks 5 for Llama targets, and our grids find nothing past 7. Each step costs one more draft
# forward pass per verify round, and the verify pass runs the target over every draft token of every
# request (its attention mask grows with their square). The bounds are 8x past anything measured: a
# larger value is a typo (10^20 would be printed, passed on, and fail inside SGLang), never a setting.
SPEC_BOUNDS = {"num_steps": 64, "topk": 64, "num_draft_tokens": 256, "max_draft_tokens": 256}
_SPEC_WHY = ("more steps, branches or draft tokens than any setting that pays off (the accepted length stops "
             "growing after a few; published EAGLE-3 settings use at most 8 steps): a typo?")


def _spec_bound_errors(spec: SpecConfig) -> list[str]:
    return [f"spec.{name}={value} is above {bound}, {_SPEC_WHY}" for name, bound in SPEC_BOUNDS.items()
            if isinstance(value := getattr(spec, name), int) and value > bound]


MAX_CONCURRENCY = 4096
MAX_PROMPTS = 1_000_000
# the GPU memory all servers sharing one GPU may take together (bench.servers_per_gpu): SGLang's own
# default fraction for one server on a large GPU is about this, the rest is CUDA contexts and graphs
MEM_FRACTION_SHARED = 0.88
# The largest whole number a setting may hold: SGLang hands sizes, counts and ids to torch and CUDA as
# 32-bit integers, so a larger one is a typo that would fail (or wrap around) deep inside the server.
MAX_INT = 2**31 - 1
_OWN_RANGE = {"sglang.port", "spec.num_steps", "spec.topk", "spec.num_draft_tokens", "spec.max_draft_tokens"}


def number_errors(cfg: ServeConfig) -> list[str]:
    """Every number of the configuration finite (no NaN or infinity) and every whole number <= ``MAX_INT``.

    The one rule for all of them: a NaN passes every ``<`` / ``>`` comparison the other rules make
    (``nan <= 0`` is false), and an infinite timeout or temperature reaches the server as such.
    """
    import math
    from dataclasses import fields, is_dataclass

    errors = []
    for section in fields(cfg):
        node = getattr(cfg, section.name)
        items = [(f"{section.name}.{f.name}", getattr(node, f.name)) for f in fields(node)] if is_dataclass(node) \
            else [(section.name, node)]
        for key, value in items:
            if key in _OWN_RANGE:
                continue
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                errors.append(f"{key}={value} is not a finite number; give a number (NaN and infinity are not "
                              "settings).")
            elif any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT for v in values):
                errors.append(f"{key}={value} is beyond {MAX_INT:,} (2^31-1), the largest whole number SGLang and "
                              "torch take here: a typo?")
    return errors


def spec_errors(spec: SpecConfig) -> list[str]:
    """Rules SGLang applies to steps / topk / draft tokens, as messages (empty when valid)."""
    bounds = _spec_bound_errors(spec)
    if bounds:  # derived values (draft tokens from steps) would only repeat them
        return bounds
    if spec.adaptive or spec.adaptive_config is not None:
        return _adaptive_errors(spec)
    spec = resolve_spec(spec)
    values = {"num_steps": spec.num_steps, "topk": spec.topk, "num_draft_tokens": spec.num_draft_tokens}
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return []
    errors = []
    if len(given) != 3:
        missing = ", ".join(f"spec.{k}" for k in values if k not in given)
        errors.append(
            f"spec.num_steps, spec.topk and spec.num_draft_tokens go together; {missing} "
            "is unset. Give steps and topk (draft tokens optional), or none to let SGLang choose."
        )
        return errors
    steps, topk, tokens = spec.num_steps, spec.topk, spec.num_draft_tokens
    for name, value in given.items():
        if value < 1:
            errors.append(f"spec.{name}={value} must be >= 1.")
    if errors:
        return errors
    if topk == 1 and tokens != steps + 1:
        errors.append(
            f"spec.topk=1 with spec.num_steps={steps} means a chain of {steps + 1} tokens: "
            f"set spec.num_draft_tokens={steps + 1} (got {tokens}; SGLang would override it)."
        )
    elif steps * topk + 1 < tokens:
        errors.append(
            f"spec.num_draft_tokens={tokens} is more than the tree can hold: "
            f"num_steps*topk+1 = {steps}*{topk}+1 = {steps * topk + 1}. Lower it or raise steps/topk."
        )
    return errors


def _adaptive_errors(spec: SpecConfig) -> list[str]:
    """Rules of SGLang's adaptive mode (SGLang would fall back to static steps with only a warning)."""
    if not spec.adaptive:
        return [f"spec.adaptive_config={spec.adaptive_config} is set but spec.adaptive is false: add "
                "spec.adaptive=true, or drop spec.adaptive_config."]
    errors = []
    if spec.topk not in (None, 1):
        errors.append(f"spec.adaptive=true runs chains only (topk 1) in SGLang, but spec.topk={spec.topk}: SGLang "
                      "would turn adaptive mode off with only a warning. Set spec.topk=1 or drop spec.adaptive.")
    if spec.num_steps is not None and spec.num_steps < 1:
        errors.append(f"spec.num_steps={spec.num_steps} must be >= 1.")
    elif spec.num_steps is not None and spec.num_draft_tokens not in (None, spec.num_steps + 1):
        errors.append(f"spec.adaptive=true with spec.num_steps={spec.num_steps} means {spec.num_steps + 1} draft "
                      f"tokens (SGLang sets steps + 1); got spec.num_draft_tokens={spec.num_draft_tokens}.")
    if spec.num_steps is None and spec.num_draft_tokens is not None:
        errors.append("spec.num_draft_tokens without spec.num_steps: in adaptive mode give the starting steps "
                      "(or neither: SGLang starts from the middle candidate).")
    return errors


def adaptive_config_errors(spec: SpecConfig) -> list[str]:
    """The adaptive config file's problems (read from disk), and starting steps outside its candidates."""
    if not spec.adaptive or spec.adaptive_config is None:
        return []
    from automodel_spec.adaptive import candidate_steps, read_adaptive_config

    try:
        config = read_adaptive_config(spec.adaptive_config)
    except ConfigError as exc:
        return exc.problems
    steps = candidate_steps(config)
    if spec.num_steps is not None and spec.num_steps not in steps:
        return [f"spec.num_steps={spec.num_steps} is not one of the candidate steps {steps} of "
                f"spec.adaptive_config={spec.adaptive_config}: SGLang would refuse to start. Pick one of them."]
    return []


def point_errors(algorithm: AlgorithmConfig, spec: SpecConfig) -> list[str]:
    """Why a speculative setting is invalid (a sweep point SGLang would reject); empty when it is valid.

    The one owner of the rule: ``validate`` refuses such a run, a benchmark sweep records the point as
    skipped (``bench.job.record_if_invalid``) and goes on.
    """
    return spec_errors(spec) if algorithm.name is not None else []


def target_path(cfg: ServeConfig) -> str | None:
    """``target.path``, or the built-in demo target when it is unset and the draft is the demo's.

    The demo target goes with the demo draft only: any other draft leaves the target unset until
    the user gives one.
    """
    if cfg.target.path is None and cfg.draft.path == DEMO_DRAFT:
        return DEMO_TARGET
    return cfg.target.path


def validate(cfg: ServeConfig, *, need_target: bool = True) -> None:
    """Check the rules between fields; raise one ``ConfigError`` listing every problem.

    Args:
        cfg: the composed configuration.
        need_target: whether a target is required (serving); exporting a draft checks it against
            the target only when one is given.
    """
    errors: list[str] = []
    algo = cfg.algorithm
    errors += point_errors(algo, cfg.spec)
    if algo.name is not None:
        if cfg.spec.adaptive and algo.name not in ("EAGLE", "EAGLE3"):
            errors.append(f"spec.adaptive=true works with algorithm=EAGLE or EAGLE3 only (SGLang), not {algo.name}.")
        if not (cfg.spec.adaptive_config and path_problem(cfg.spec.adaptive_config)):
            errors += adaptive_config_errors(cfg.spec)
    elif any(v is not None for v in (cfg.spec.num_steps, cfg.spec.topk, cfg.spec.num_draft_tokens)) \
            or cfg.spec.adaptive:
        errors.append("spec.* is set but algorithm=none serves without speculation; drop spec.* overrides.")
    if algo.needs_draft and not cfg.draft.path:
        errors.append(
            f"algorithm={algo.name} needs a drafter: set draft.path=RUN_DIR, an epoch_E_step_S dir or org/name."
        )
    target = target_path(cfg)
    if not target and need_target:
        if algo.needs_draft and cfg.draft.path:
            errors.append(
                f"target.path is unset: draft.path={cfg.draft.path} is served with its target model; set "
                "target.path=MODEL_DIR_OR_HUB_ID (the built-in demo target goes only with the demo draft)."
            )
        else:
            errors.append("target.path is unset: set target.path=MODEL_DIR_OR_HUB_ID.")
    demo_draft = cfg.draft.path == DEMO_DRAFT
    demo_target = target == DEMO_TARGET
    if algo.needs_draft and cfg.draft.path and target and demo_draft != demo_target:
        if demo_target:
            errors.append(
                f"target.path={target} is the built-in demo target, which goes only with the demo draft: "
                f"set target.path=MODEL_DIR_OR_HUB_ID to the model draft.path={cfg.draft.path} was trained for."
            )
        else:
            errors.append(
                f"draft.path={cfg.draft.path} is the built-in demo draft, which goes only with the demo target: "
                f"set draft.path=RUN_DIR (with draft=automodel, legacy or hub) to a drafter for "
                f"target.path={target}, or algorithm=none to serve the target alone."
            )
    if cfg.sglang.tp_size < 1:
        errors.append(f"sglang.tp_size={cfg.sglang.tp_size} must be >= 1.")
    if not 0 <= cfg.sglang.port <= 65535:
        errors.append(f"sglang.port={cfg.sglang.port} is not a port (0 picks a free one).")
    frac = cfg.sglang.mem_fraction_static
    if frac is not None and not 0 < frac < 1:
        errors.append(f"sglang.mem_fraction_static={frac} must lie between 0 and 1.")
    if cfg.sglang.ready_timeout_s <= 0:
        errors.append(f"sglang.ready_timeout_s={cfg.sglang.ready_timeout_s} must be > 0.")
    if cfg.draft.aux_layer_ids is not None and any(i < 0 for i in cfg.draft.aux_layer_ids):
        errors.append(f"draft.aux_layer_ids={cfg.draft.aux_layer_ids} must be layer indices >= 0.")
    ids = cfg.draft.aux_layer_ids
    if ids is not None and len(set(ids)) != len(ids):
        errors.append(f"draft.aux_layer_ids={ids} repeats a layer: each id names one target layer whose hidden "
                      "state the draft reads, so the ids must be distinct (the ones the draft was trained on).")
    errors += number_errors(cfg)
    errors += server_errors(cfg.sglang)
    errors += path_errors(cfg)
    if cfg.mode == Mode.check and cfg.algorithm.name not in ("EAGLE", "EAGLE3"):
        errors.append(f"mode=check holds an EAGLE draft against its reference; algorithm={cfg.algorithm.name} "
                      "has none: use algorithm=EAGLE3 or algorithm=EAGLE.")
    if cfg.mode in (Mode.bench, Mode.check):
        b = cfg.bench
        if b.expected_accept_length is not None and b.expected_accept_length < 1:
            errors.append(f"bench.expected_accept_length={b.expected_accept_length} must be >= 1 (every verify "
                          "round yields at least one token).")
        if b.warmup_requests < 0:
            errors.append(f"bench.warmup_requests={b.warmup_requests} must be >= 0 (0: no warm-up).")
        if b.objective_concurrency is not None and b.objective_concurrency not in b.concurrency:
            errors.append(f"bench.objective_concurrency={b.objective_concurrency} is not one of "
                          f"bench.concurrency={b.concurrency}.")
        if b.num_prompts < 1:
            errors.append(f"bench.num_prompts={b.num_prompts} must be >= 1.")
        if b.gpu_free_wait_s < 0:
            errors.append(f"bench.gpu_free_wait_s={b.gpu_free_wait_s} must be >= 0 (0: do not wait).")
        if not b.concurrency or any(c < 1 for c in b.concurrency):
            errors.append(f"bench.concurrency={b.concurrency} needs one or more levels >= 1.")
        elif max(b.concurrency) > MAX_CONCURRENCY:
            errors.append(f"bench.concurrency={b.concurrency} goes above {MAX_CONCURRENCY}: the client keeps a thread "
                          "per request in flight (and SGLang serves a few hundred at once at most). Lower it.")
        if b.num_prompts > MAX_PROMPTS:
            errors.append(f"bench.num_prompts={b.num_prompts} is above {MAX_PROMPTS:,}: every request is held in "
                          "memory and sent one by one. Lower it.")
        if b.max_new_tokens < 1:
            errors.append(f"bench.max_new_tokens={b.max_new_tokens} must be >= 1.")
        if not b.temperature or any(t < 0 for t in b.temperature):
            errors.append(f"bench.temperature={b.temperature} needs one or more sampling temperatures >= 0 "
                          "(a list: bench.temperature=[0,5]).")
        if cfg.sglang.node_rank > 0:
            errors.append(f"mode=bench with sglang.node_rank={cfg.sglang.node_rank}: only rank 0 serves requests. "
                          "Start the other nodes with mode=serve and benchmark on rank 0.")
        if b.servers_per_gpu < 1:
            errors.append(f"bench.servers_per_gpu={b.servers_per_gpu} must be >= 1 (1: each server has its GPUs alone).")
        elif b.servers_per_gpu > 1:
            most = round(MEM_FRACTION_SHARED / b.servers_per_gpu, 3)
            frac = cfg.sglang.mem_fraction_static
            if frac is None or frac > most:
                errors.append(f"bench.servers_per_gpu={b.servers_per_gpu} puts that many servers on one GPU; "
                              f"sglang.mem_fraction_static={frac} would let each take more than its share of "
                              f"the GPU's memory. Set sglang.mem_fraction_static={most} or lower.")
        if b.gpu_pool is not None and len(b.gpu_pool) < cfg.sglang.tp_size:
            errors.append(f"bench.gpu_pool={b.gpu_pool} holds {len(b.gpu_pool)} GPU(s); sglang.tp_size="
                          f"{cfg.sglang.tp_size} needs that many for one point. List more GPUs or lower tp_size.")
        if b.objective_temperature is not None and b.objective_temperature not in b.temperature:
            errors.append(f"bench.objective_temperature={b.objective_temperature} is not one of "
                          f"bench.temperature={b.temperature}.")
    if errors:
        raise ConfigError(errors)


def server_errors(sg: SGLangConfig) -> list[str]:
    """Rules on the server's own settings (values SGLang would refuse late, or misread)."""
    errors = []
    if sg.nnodes < 1:
        errors.append(f"sglang.nnodes={sg.nnodes} must be >= 1 (the number of machines serving the model).")
    elif not 0 <= sg.node_rank < sg.nnodes:
        errors.append(f"sglang.node_rank={sg.node_rank} must lie in 0..sglang.nnodes-1 (sglang.nnodes={sg.nnodes}): "
                      "each machine gets its own rank, starting at 0.")
    errors += multi_node_errors(sg)
    for key in ("context_length", "cuda_graph_max_bs", "max_running_requests"):
        value = getattr(sg, key)
        if value is not None and value < 1:
            errors.append(f"sglang.{key}={value} must be >= 1, or null to leave it to SGLang.")
    if sg.cuda_graph_bs is not None and any(b < 1 for b in sg.cuda_graph_bs):
        errors.append(f"sglang.cuda_graph_bs={sg.cuda_graph_bs} must hold batch sizes >= 1.")
    if sg.stop_timeout_s <= 0:
        errors.append(f"sglang.stop_timeout_s={sg.stop_timeout_s} must be > 0.")
    if sg.release is not None:
        try:
            applicable_release(sg.release)
        except ValueError as exc:
            errors.append(f"sglang.release={sg.release}: {exc}. Give the SGLang release the command is for, or drop "
                          "sglang.release to build for the installed one.")
    errors += [f"sglang.extra_args sets {flag}, which the launcher already sets from {key}: SGLang would take "
               f"the last one while this tool checks, health-polls and reports the other. Drop it from "
               f"sglang.extra_args and set {key} instead." for flag, key in managed_extra_args(sg.extra_args)]
    return errors


def multi_node_errors(sg: SGLangConfig) -> list[str]:
    """Rules for serving one model from several machines (``nnodes`` > 1)."""
    if sg.nnodes <= 1:
        return []
    errors = []
    if sg.tp_size % sg.nnodes:
        errors.append(f"sglang.tp_size={sg.tp_size} is not a multiple of sglang.nnodes={sg.nnodes}: each node "
                      "serves tp_size/nnodes GPUs (e.g. sglang.tp_size=16 sglang.nnodes=2 for 8 GPUs a node).")
    if not sg.dist_init_addr:
        errors.append(f"sglang.nnodes={sg.nnodes} needs sglang.dist_init_addr=HOST:PORT: the address of rank 0 "
                      "where the nodes meet, the same on every node (e.g. sglang.dist_init_addr=10.0.0.1:50000).")
    else:
        problem = address_problem(sg.dist_init_addr)
        if problem:
            errors.append(f"sglang.dist_init_addr={sg.dist_init_addr}: {problem}")
    return errors


def address_problem(addr: str) -> str | None:
    """Why ``addr`` is not ``HOST:PORT`` (``[IPv6]:PORT`` for IPv6), or ``None``."""
    host, sep, port = str(addr).rpartition(":")
    if not sep or not host:
        return "give it as HOST:PORT (e.g. 10.0.0.1:50000), the address of rank 0 and a free port there."
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return "an IPv6 address goes in brackets: [ADDR]:PORT."
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"the port {port!r} is not a port number (1-65535)."
    return None


def managed_extra_args(extra_args: list[str]) -> list[tuple[str, str]]:
    """``(flag, config key)`` for each flag in ``extra_args`` that the launcher sets itself."""
    found = []
    for arg in extra_args:
        flag = str(arg).split("=", 1)[0]
        if flag in MANAGED_FLAGS:
            found.append((flag, MANAGED_FLAGS[flag]))
    return found


def config_warnings(cfg: ServeConfig) -> list[str]:
    """What serves, but deserves a word before it does (printed, never refused)."""
    warnings = []
    if cfg.sglang.host in ("0.0.0.0", "::", "") and not cfg.sglang.api_key:
        warnings.append(
            f"WARNING: sglang.host={cfg.sglang.host or '(all)'} listens on every network interface and "
            "sglang.api_key is unset: anyone who reaches this machine's port can use the server. Set "
            "sglang.api_key='${oc.env:SGLANG_API_KEY}', or keep the default sglang.host=127.0.0.1."
        )
    if cfg.sglang.dist_init_addr and cfg.sglang.nnodes == 1:
        warnings.append(f"WARNING: sglang.dist_init_addr={cfg.sglang.dist_init_addr} is ignored with sglang.nnodes=1 "
                        "(it is where several nodes meet); set sglang.nnodes and sglang.node_rank to serve from "
                        "several machines.")
    return warnings


# The paths the library reads or writes, by config key
def _path_values(cfg: ServeConfig) -> dict[str, str | None]:
    return {"draft.path": cfg.draft.path, "draft.export_dir": cfg.draft.export_dir, "draft.config": cfg.draft.config,
            "target.path": cfg.target.path, "cache_dir": cfg.cache_dir, "output_dir": cfg.output_dir,
            "bench.prompts": cfg.bench.prompts, "spec.adaptive_config": cfg.spec.adaptive_config}


def path_errors(cfg: ServeConfig) -> list[str]:
    """Paths no file system call can take: ``~user`` of no such user, longer than the system allows."""
    import os

    values = _path_values(cfg)
    values["$AUTOMODEL_SPEC_CACHE"] = os.environ.get("AUTOMODEL_SPEC_CACHE")
    errors = []
    for key, value in values.items():
        problem = path_problem(value) if value and not value.startswith("builtin:") else None
        if problem:
            errors.append(f"{key}={_shorten(value)}: {problem}")
    return errors


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a path here (unknown ``~user``, too long), or ``None``."""
    import os
    from pathlib import Path

    if value.startswith("~"):
        user = value[1:].split("/", 1)[0]
        try:
            value = str(Path(value).expanduser())
        except RuntimeError:
            who = f"there is no user {user!r} on this machine" if user else "$HOME is not set and there is no home"
            return f"'~{user}' cannot be expanded: {who}. Give the path without '~', or the right user name."
    path_max, name_max = _limits()
    size = len(os.fsencode(value))
    if size >= path_max:
        return (f"the path is {size} bytes long; this system allows at most {path_max - 1} (PATH_MAX). "
                "Move the files to a shorter path, or link them from one.")
    long_part = next((p for p in value.split("/") if len(os.fsencode(p)) > name_max), None)
    if long_part is not None:
        return (f"the name {_shorten(long_part)} is {len(os.fsencode(long_part))} bytes long; this file system "
                f"allows at most {name_max} per name (NAME_MAX). Rename it.")
    return None


def _limits() -> tuple[int, int]:
    """PATH_MAX and NAME_MAX of the root file system (Linux defaults where ``pathconf`` is missing)."""
    import os

    try:
        return os.pathconf("/", "PC_PATH_MAX"), os.pathconf("/", "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        return 4096, 255


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else f"{value[:40]}...{value[-30:]} ({len(value)} characters)"
