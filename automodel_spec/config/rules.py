"""The rules between a run's fields: ``validate`` gathers every problem into one ``ConfigError``.

Which target a configuration names (``target_path``), the server's own settings, the bench workload,
finite numbers and paths a file system can take. The speculative setting's own rules are in ``spec_rules``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import fields, is_dataclass

from automodel_spec.config.schema import (
    DEMO_DRAFT,
    DEMO_TARGET,
    LONG_PROMPTS,
    BenchConfig,
    DraftConfig,
    Mode,
    Objective,
    ServeConfig,
    SGLangConfig,
)
from automodel_spec.config.sglang_options import MANAGED_FLAGS, applicable_release
from automodel_spec.config.spec_rules import adaptive_config_errors, point_errors
from automodel_spec.errors import ConfigError
from automodel_spec.io.path_lookup import path_problem, shorten_path

MAX_CONCURRENCY = 4096
MAX_PROMPTS = 1_000_000
# open-loop arrivals: the client sends each from a thread at its time; beyond this it measures itself
MAX_REQUEST_RATE = 10_000.0
# the GPU memory all servers sharing one GPU may take together (bench.servers_per_gpu): SGLang's own
# default fraction for one server on a large GPU is about this, the rest is CUDA contexts and graphs
MEM_FRACTION_SHARED = 0.88
# the least share of a GPU's memory a server sharing it is sized for: below it (a fraction that rounds to 0.0
# at 1,000 servers) no server holds a model and its cache
MIN_MEM_FRACTION_SHARED = 0.01
MAX_SERVERS_PER_GPU = int(MEM_FRACTION_SHARED / MIN_MEM_FRACTION_SHARED)
# The largest whole number a setting may hold: SGLang hands sizes, counts and ids to torch and CUDA as
# 32-bit integers, so a larger one is a typo that would fail (or wrap around) deep inside the server.
MAX_INT = 2**31 - 1
_OWN_RANGE = {"sglang.port", "spec.num_steps", "spec.topk", "spec.num_draft_tokens", "spec.max_draft_tokens"}


def number_errors(cfg: ServeConfig) -> list[str]:
    """Every number of the configuration finite (no NaN or infinity) and every whole number <= ``MAX_INT``.

    The one rule for all of them: a NaN passes every ``<`` / ``>`` comparison the other rules make
    (``nan <= 0`` is false), and an infinite timeout or temperature reaches the server as such.
    """
    return [message for _, message in _bad_numbers(cfg)]


def _bad_numbers(cfg: ServeConfig) -> list[tuple[str, str]]:
    """``(key=value, why)`` of each setting that ``number_errors`` refuses."""
    found = []
    for section in fields(cfg):
        node = getattr(cfg, section.name)
        items = [(f"{section.name}.{f.name}", getattr(node, f.name)) for f in fields(node)] if is_dataclass(node) \
            else [(section.name, node)]
        for key, value in items:
            if key in _OWN_RANGE:
                continue
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                found.append((f"{key}={value}", f"{key}={value} is not a finite number; give a number (NaN and "
                                                "infinity are not settings)."))
            elif any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT for v in values):
                found.append((f"{key}={value}", f"{key}={value} is beyond {MAX_INT:,} (2^31-1), the largest whole "
                                                "number SGLang and torch take here: a typo?"))
    return found


def _naming(settings: list[str]) -> re.Pattern | None:
    """What finds a message that names one of ``settings`` (``key=value``), the value whole (``=9`` is not ``=99``)."""
    return re.compile("|".join(re.escape(s) for s in settings) + r"(?![\w\]]|\.\d)") if settings else None


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
    bad = _bad_numbers(cfg)
    rules = [*_speculation_errors(cfg), *_draft_and_target_errors(cfg, need_target),
             *_server_range_errors(cfg.sglang), *_aux_layer_errors(cfg.draft), *server_errors(cfg.sglang),
             *path_errors(cfg), *_mode_errors(cfg)]
    # a value that is no usable number is said once, as such: the rules that compare it with a range or with
    # other settings would say it again in their own words (each rule writes a value it names as key=value)
    naming = _naming([setting for setting, _ in bad])
    errors = [*(why for _, why in bad), *(e for e in rules if naming is None or not naming.search(e))]
    if errors:
        raise ConfigError(errors)


def _speculation_errors(cfg: ServeConfig) -> list[str]:
    """The speculative setting (``spec_rules``), adaptive mode's algorithms and file, and ``spec.*`` without speculation."""
    algo, spec = cfg.algorithm, cfg.spec
    errors = list(point_errors(algo, spec))
    if algo.name is not None:
        if spec.adaptive and algo.name not in ("EAGLE", "EAGLE3"):
            errors.append(f"spec.adaptive=true works with algorithm=EAGLE or EAGLE3 only (SGLang), not {algo.name}.")
        if not (spec.adaptive_config and path_problem(spec.adaptive_config)):  # an unusable path: path_errors says so
            errors += adaptive_config_errors(spec)
    elif any(v is not None for v in (spec.num_steps, spec.topk, spec.num_draft_tokens)) or spec.adaptive:
        errors.append("spec.* is set but algorithm=none serves without speculation; drop spec.* overrides.")
    return errors


def _draft_and_target_errors(cfg: ServeConfig, need_target: bool) -> list[str]:
    """A drafter where the algorithm needs one, a target where serving needs one, and the demo pair kept together."""
    algo, draft = cfg.algorithm, cfg.draft.path
    errors = []
    if algo.needs_draft and not draft:
        errors.append(
            f"algorithm={algo.name} needs a drafter: set draft.path=RUN_DIR, an epoch_E_step_S dir or org/name."
        )
    target = target_path(cfg)
    if not target and need_target:
        if algo.needs_draft and draft:
            errors.append(
                f"target.path is unset: draft.path={draft} is served with its target model; set "
                "target.path=MODEL_DIR_OR_HUB_ID (the built-in demo target goes only with the demo draft)."
            )
        else:
            errors.append("target.path is unset: set target.path=MODEL_DIR_OR_HUB_ID.")
    demo_draft = draft == DEMO_DRAFT
    demo_target = target == DEMO_TARGET
    if algo.needs_draft and draft and target and demo_draft != demo_target:
        if demo_target:
            errors.append(
                f"target.path={target} is the built-in demo target, which goes only with the demo draft: "
                f"set target.path=MODEL_DIR_OR_HUB_ID to the model draft.path={draft} was trained for."
            )
        else:
            errors.append(
                f"draft.path={draft} is the built-in demo draft, which goes only with the demo target: "
                f"set draft.path=RUN_DIR (with draft=trained, legacy or hub) to a drafter for "
                f"target.path={target}, or algorithm=none to serve the target alone."
            )
    return errors


def _server_range_errors(sg: SGLangConfig) -> list[str]:
    """The server's sizes, port, memory fraction and start-up timeout within their ranges."""
    errors = []
    if sg.tp_size < 1:
        errors.append(f"sglang.tp_size={sg.tp_size} must be >= 1.")
    if not 0 <= sg.port <= 65535:
        errors.append(f"sglang.port={sg.port} is not a port (0 picks a free one).")
    frac = sg.mem_fraction_static
    if frac is not None and not 0 < frac < 1:
        errors.append(f"sglang.mem_fraction_static={frac} must lie between 0 and 1.")
    if sg.ready_timeout_s <= 0:
        errors.append(f"sglang.ready_timeout_s={sg.ready_timeout_s} must be > 0.")
    return errors


def _aux_layer_errors(draft: DraftConfig) -> list[str]:
    """``draft.aux_layer_ids``: target layer indices, each once."""
    ids = draft.aux_layer_ids
    if ids is None:
        return []
    errors = []
    if any(i < 0 for i in ids):
        errors.append(f"draft.aux_layer_ids={ids} must be layer indices >= 0.")
    if len(set(ids)) != len(ids):
        errors.append(f"draft.aux_layer_ids={ids} repeats a layer: each id names one target layer whose hidden "
                      "state the draft reads, so the ids must be distinct (the ones the draft was trained on).")
    return errors


def _mode_errors(cfg: ServeConfig) -> list[str]:
    """``mode=check`` needs an EAGLE draft; ``mode=bench`` and ``check`` a valid workload."""
    errors = []
    if cfg.mode == Mode.check and cfg.algorithm.name not in ("EAGLE", "EAGLE3"):
        errors.append(f"mode=check holds an EAGLE draft against its reference; algorithm={cfg.algorithm.name} "
                      "has none: use algorithm=EAGLE3 or algorithm=EAGLE.")
    expected, steps = cfg.bench.expected_accept_length, cfg.spec.num_steps
    if cfg.mode == Mode.check and expected is not None and steps is not None and not cfg.spec.adaptive \
            and expected > steps + 1:
        # a check that no server can pass (in a sweep the floor is held per point, and a short chain under it
        # fails its verdict rather than going unmeasured)
        errors.append(f"bench.expected_accept_length={expected} is above {steps + 1}, the most spec.num_steps="
                      f"{steps} accepts in a round (every draft token and the target's own): no server could pass "
                      "the check. Give the accept length measured in training for this many steps, or more steps.")
    if cfg.mode in (Mode.bench, Mode.check):
        errors += _bench_errors(cfg.bench, cfg.sglang)
    return errors


def _bench_errors(b: BenchConfig, sg: SGLangConfig) -> list[str]:
    """The benchmark workload's rules, and the server settings a benchmark point needs."""
    errors = []
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
    if sg.node_rank > 0:
        errors.append(f"mode=bench with sglang.node_rank={sg.node_rank}: only rank 0 serves requests. "
                      "Start the other nodes with mode=serve and benchmark on rank 0.")
    if b.servers_per_gpu < 1:
        errors.append(f"bench.servers_per_gpu={b.servers_per_gpu} must be >= 1 (1: each server has its GPUs alone).")
    elif b.servers_per_gpu > MAX_SERVERS_PER_GPU:
        errors.append(f"bench.servers_per_gpu={b.servers_per_gpu} would leave each server under "
                      f"{MIN_MEM_FRACTION_SHARED:.0%} of the GPU's memory (together they take {MEM_FRACTION_SHARED}): "
                      f"no server starts in that. Give at most {MAX_SERVERS_PER_GPU}.")
    elif b.servers_per_gpu > 1:
        most = round(MEM_FRACTION_SHARED / b.servers_per_gpu, 3)
        if sg.mem_fraction_static is None or sg.mem_fraction_static > most:
            errors.append(f"bench.servers_per_gpu={b.servers_per_gpu} puts that many servers on one GPU; "
                          f"sglang.mem_fraction_static={sg.mem_fraction_static} would let each take more than its "
                          f"share of the GPU's memory. Set sglang.mem_fraction_static={most} or lower.")
    pool = [str(g).strip() for g in b.gpu_pool or []]
    if any(not g or g.startswith("-") for g in pool) or len(set(pool)) < len(pool):
        errors.append(f"bench.gpu_pool={b.gpu_pool} must list GPUs as CUDA_VISIBLE_DEVICES takes them (indices 0, "
                      "1, ... as nvidia-smi numbers them, or UUIDs), each once: a negative index hides every GPU "
                      "from the server, and a GPU listed twice would be leased to two points as if it were two.")
    elif b.gpu_pool is not None and len(b.gpu_pool) < sg.tp_size:
        errors.append(f"bench.gpu_pool={b.gpu_pool} holds {len(b.gpu_pool)} GPU(s); sglang.tp_size="
                      f"{sg.tp_size} needs that many for one point. List more GPUs or lower tp_size.")
    if b.long_prompts not in LONG_PROMPTS:
        errors.append(f"bench.long_prompts={b.long_prompts} must be one of {', '.join(LONG_PROMPTS)} (what becomes "
                      "of a prompt longer than the target's context).")
    if b.objective_temperature is not None and b.objective_temperature not in b.temperature:
        errors.append(f"bench.objective_temperature={b.objective_temperature} is not one of "
                      f"bench.temperature={b.temperature}.")
    return errors + _load_errors(b)


def phase_load(text: str) -> tuple[str, float]:
    """One phase of ``bench.phases``: ``c8`` -> ``("concurrency", 8)``, ``r2.5`` -> ``("rate", 2.5)``.

    Raises:
        ValueError: not ``c<N>`` (a whole number >= 1) or ``r<R>`` (a rate > 0), with what to write instead.
    """
    word = str(text).strip().lower()
    kind = {"c": "concurrency", "r": "rate"}.get(word[:1])
    try:
        value = float(word[1:]) if kind else math.nan
    except ValueError:
        value = math.nan
    if kind == "concurrency" and value.is_integer() and 1 <= value <= MAX_CONCURRENCY:
        return kind, int(value)
    if kind == "rate" and math.isfinite(value) and 0 < value <= MAX_REQUEST_RATE:
        return kind, value
    raise ValueError(f"phase {text!r} is not c<N> (N requests in flight, 1..{MAX_CONCURRENCY}) or r<R> "
                     f"(R requests/s, above 0 and at most {MAX_REQUEST_RATE:g}); e.g. bench.phases=[c1,c8,c32,c1]")


def _load_errors(b: BenchConfig) -> list[str]:
    """Open-loop rates, phases, their bounds and the service-level goals."""
    errors = []
    if b.request_rate is not None:
        if not b.request_rate or any(not 0 < r <= MAX_REQUEST_RATE for r in b.request_rate):
            errors.append(f"bench.request_rate={b.request_rate} needs one or more rates in requests/s, each above 0 "
                          f"and at most {MAX_REQUEST_RATE:g} (e.g. bench.request_rate=[1,4]); drop it for the "
                          "concurrency levels alone.")
    if b.duration_s is not None and not b.duration_s > 0:
        errors.append(f"bench.duration_s={b.duration_s} must be > 0 (seconds of arrivals a level), or null to send "
                      "bench.num_prompts requests whatever they take.")
    if b.max_concurrency is not None and not 1 <= b.max_concurrency <= MAX_CONCURRENCY:
        errors.append(f"bench.max_concurrency={b.max_concurrency} must lie in 1..{MAX_CONCURRENCY} (the requests of an "
                      "open-loop level in flight at once), or null for no cap.")
    if b.phases is not None:
        if not b.phases:
            errors.append("bench.phases=[] has no phase: give the load's phases, e.g. bench.phases=[c1,c8,c32,c1], "
                          "or drop bench.phases to measure the levels.")
        for text in b.phases:
            try:
                phase_load(text)
            except ValueError as exc:
                errors.append(f"bench.phases={list(b.phases)}: {exc}.")
        if b.request_rate is not None:
            errors.append(f"bench.phases and bench.request_rate={b.request_rate} are both set: a phased run measures "
                          "its phases instead of the levels; give the rates as phases (r<R>) or drop bench.phases.")
    for key in ("ttft_s", "itl_s", "tpot_s"):
        bound = getattr(b.slo, key)
        if bound is not None and not (math.isfinite(bound) and bound > 0):
            errors.append(f"bench.slo.{key}={bound} must be a finite number of seconds > 0 (the p99 bound), or null "
                          "for no bound.")
    if b.objective == Objective.goodput and all(getattr(b.slo, k) is None for k in ("ttft_s", "itl_s", "tpot_s")):
        errors.append("bench.objective=goodput ranks by the requests/s served within bench.slo's goals, and none is "
                      "set: give one or more of bench.slo.ttft_s, bench.slo.itl_s, bench.slo.tpot_s (seconds).")
    return errors


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
    values = _path_values(cfg)
    values["$AUTOMODEL_SPEC_CACHE"] = os.environ.get("AUTOMODEL_SPEC_CACHE")
    errors = []
    for key, value in values.items():
        problem = path_problem(value) if value and not value.startswith("builtin:") else None
        if problem:
            errors.append(f"{key}={shorten_path(value)}: {problem}")
    return errors
