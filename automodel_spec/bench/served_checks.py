"""Two checks of what a benchmark point served: as trained (against the reference) and lossless.

* Served as trained: the draft's reference accept length (``automodel_spec.bench.reference``, no SGLang)
  over the same prompts and setting (steps, topk, draft tokens, as the server reports them), computed
  once per temperature and held against each level's served accept length (``reference.verdict``:
  within 5% of an exact value at temperature 0, not below the 99% interval of one served run at
  temperature > 0, with SGLang's accept thresholds and rejection sampling as the server reports them),
  and depth by depth against the served histogram (``accept_depths.depth_verdict``).
* Lossless: at temperature 0 speculative decoding must return the target's own greedy tokens, so
  each request's output is compared with the no-speculation baseline's for the same prompt and level.
  Even at concurrency 1 the verify pass runs the target over several tokens at once where the
  baseline decodes one, and at concurrency > 1 SGLang batches requests: kernels of other shapes
  (GEMM tiling, split-KV attention, CUDA graphs per batch size) can resolve a bf16 near-tie argmax
  the other way (on the real pair, 2 of 24 outputs at batch 1). So a difference is a warning with
  its share and first position, not a failure of ``mode=check``; many requests differing from their
  first tokens is not that.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
from pathlib import Path

from automodel_spec.bench import accept_depths
from automodel_spec.bench.point import BenchPoint
from automodel_spec.bench.result import PointResult, ReferenceSummary
from automodel_spec.bench.workload import level_prompts
from automodel_spec.config.sglang_options import (
    INFO_REJECTION_SAMPLING,
    INFO_THRESHOLD_ACC,
    INFO_THRESHOLD_SINGLE,
)
from automodel_spec.draft.trained_depths import read_trained_depths
from automodel_spec.errors import SpecError
from automodel_spec.export.target import read_target_config
from automodel_spec.io import nvidia_smi
from automodel_spec.io.torch_import import import_torch
from automodel_spec.prepare import PreparedRun

log = logging.getLogger(__name__)


def _reference_module():
    from automodel_spec.bench import reference

    return reference


def reference_plan(cfg: BenchPoint, run: PreparedRun, result: PointResult, n_prompts: int) -> str | None:
    """Why the reference is not computed for this point (``None``: compute it)."""
    ref = _reference_module()
    b = cfg.bench
    if b.reference is False:
        return "bench.reference=false"
    if cfg.algorithm.name not in ("EAGLE", "EAGLE3") or run.export is None:
        return f"algorithm={cfg.algorithm.name} has no exported EAGLE draft to compute"
    setting = result.setting
    if setting.adaptive or setting.num_steps is None:
        return "the steps are chosen at run time (adaptive or unset): no fixed tree to compute"
    target_cfg = _local_target_config(run.target)
    if target_cfg is None:
        return f"target {run.target} is not a local directory (the reference loads it with local files only)"
    cost = ref.estimated_cost(target_cfg, n_prompts, b.max_new_tokens) * _cost_factor(setting, b.temperature)
    if b.reference is None and cost > ref.AUTO_COST_LIMIT:
        return (f"bench.reference auto: target parameters x prompts x tokens = {cost:.1e} > "
                f"{ref.AUTO_COST_LIMIT:.0e} (set bench.reference=true to compute it anyway)")
    if b.reference is None:
        no_gpu = "bench.reference auto: no CUDA GPU here (set bench.reference=true to compute it on the CPU)"
        if not _nvidia_device() or _cpu_build_of_torch():  # said without torch's ~1.5 s import
            return no_gpu
        # installed is enough to know here (the computation imports it): its import costs a second or more
        if importlib.util.find_spec("transformers") is None:
            return "bench.reference auto: transformers is not installed (pip install \"automodel-spec[reference]\")"
        if not import_torch().cuda.is_available():
            return no_gpu
    return None


REFERENCE_SAMPLES = 4  # generations per prompt at temperature > 0 (the interval's spread comes from them)


def _cost_factor(setting, temperatures) -> float:
    """How many chains' worth a point's references cost: the target runs over each leaf of a tree (at
    most ``num_draft_tokens - 1``), and ``REFERENCE_SAMPLES`` generations per prompt at temperature > 0."""
    leaves = max(1, (setting.num_draft_tokens or 2) - 1) if (setting.topk or 1) > 1 else 1
    return leaves * sum(REFERENCE_SAMPLES if float(t) > 0 else 1 for t in set(temperatures))


def _sampling(result: PointResult, temperature: float, seed: int):
    """The verify settings of a level, as the server reported them (SGLang's defaults otherwise)."""
    from automodel_spec.bench.tree_reference import Sampling

    info = result.server_settings or {}
    return Sampling(temperature=temperature,
                    threshold_single=float(info.get(INFO_THRESHOLD_SINGLE) or 1.0),
                    threshold_acc=float(info.get(INFO_THRESHOLD_ACC) or 1.0),
                    rejection=bool(info.get(INFO_REJECTION_SAMPLING)),
                    samples=REFERENCE_SAMPLES, seed=seed)


def _nvidia_device() -> bool:
    """An NVIDIA GPU may be here: the driver's control device exists or ``nvidia-smi`` lists a GPU."""
    return Path("/dev/nvidiactl").exists() or bool(nvidia_smi.gpu_indices())


def _cpu_build_of_torch() -> bool:
    """The installed torch is one of PyTorch's CPU-only builds, whose version says so ("2.13.0+cpu")."""
    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return False


def _local_target_config(target: str | None) -> dict | None:
    """The target's config for the cost estimate, ``None`` where it cannot be read (the export says why)."""
    try:
        return read_target_config(target)
    except SpecError:
        return None


def add_reference(cfg: BenchPoint, run: PreparedRun, result: PointResult, pool, cache_dir: Path | None = None) -> None:
    """Compute the reference for each temperature and set each level's reference and verdicts on ``result``.

    A failure is recorded in ``result.reference`` (status ``failed``) and fails every verdict; it
    does not fail the measurement itself. With ``cache_dir`` (a sweep's shared directory) points of
    one draft and setting share one computation per temperature.
    """
    b = cfg.bench
    per_level = {key: _prompts_of(pool, b, m) for key, m in result.levels.items()}
    unique = list({p.id: p for prompts in per_level.values() for p in prompts}.values())
    why_not = reference_plan(cfg, run, result, len(unique))
    if why_not is not None:
        if b.reference is not None or cfg.algorithm.name in ("EAGLE", "EAGLE3"):
            result.reference = ReferenceSummary(status="skipped", reason=why_not)
            log.info("[bench] reference accept length not computed: %s", why_not)
        return
    setting = result.setting
    computed = {}
    try:
        for temp in sorted({float(t) for t in b.temperature}):
            computed[temp] = _cached_reference(cache_dir, run, unique, setting, b.max_new_tokens, b.gpu_pool,
                                               b.servers_per_gpu, _sampling(result, temp, b.seed))
    except SpecError as exc:
        result.reference = ReferenceSummary(status="failed", reason=str(exc))
        log.warning("[bench] WARNING: the reference accept length could not be computed: %s", exc)
        for m in result.levels.values():
            m.served_as_trained, m.reference_verdict = False, f"no reference: {exc}"
        return
    first = computed[min(computed)]
    result.reference = ReferenceSummary(
        status="ok", accept_length=first.accept_length, histogram=first.histogram, num_steps=setting.num_steps,
        topk=setting.topk or 1, exact=first.exact, problems=first.problems, aux_layers=first.aux_layers,
        device=first.device, seconds=sum(c.seconds for c in computed.values()), kind=first.kind,
        num_draft_tokens=first.num_draft_tokens,
        by_temperature={f"{t:g}": {"kind": c.kind, "accept_length": c.accept_length, "histogram": c.histogram,
                                   "interval": list(c.interval) if c.interval else None, "seconds": c.seconds}
                        for t, c in computed.items()})
    trained = read_trained_depths(getattr(getattr(run, "draft", None), "path", None))
    for key, m in result.levels.items():
        judge_level(m, computed[float(m.temperature)], [p.id for p in per_level[key]],
                    expected_accept_length=cfg.bench.expected_accept_length, trained=trained)


def judge_level(m, computed, prompt_ids: list[str], *, expected_accept_length: float | None = None,
                trained=None) -> None:
    """Set on level ``m`` its reference over the prompts it sent (``prompt_ids``), its verdict, its per-depth
    verdict and, for a chain at temperature 0, the reference against training's own per-depth figures
    (``trained``, where recorded). ``scripts/gpu/real_pair/tree_table.py`` judges with it too."""
    ref = _reference_module()
    by_id = {p.prompt_id: p for p in computed.prompts}
    mine = [by_id[i] for i in prompt_ids]
    interval = ref.interval_of_prompts(mine) if computed.kind == "interval" else None
    m.reference_accept_length, m.reference_kind = ref.accept_length_of(mine), computed.kind
    m.reference_interval = list(interval) if interval else None
    m.served_as_trained, m.reference_verdict = ref.verdict(
        m.accept_length, m.reference_accept_length, computed.problems, exact=computed.kind != "bound",
        min_accept_length=expected_accept_length, interval=interval)
    m.reference_histogram = ref.histogram_of(mine)
    if m.accept_histogram and computed.kind != "bound":
        m.served_survival = accept_depths.survival(m.accept_histogram)
        m.reference_survival = accept_depths.survival(m.reference_histogram)
        m.histogram_distance = accept_depths.histogram_distance(m.accept_histogram, m.reference_histogram)
        m.depths_as_trained, m.depth_verdict = accept_depths.depth_verdict(m.accept_histogram, m.reference_histogram)
    if not m.served_as_trained:
        log.warning("[bench] WARNING T=%g c=%d: %s", m.temperature, m.concurrency, m.reference_verdict)
    if m.depths_as_trained is False:
        log.warning("[bench] WARNING T=%g c=%d: %s", m.temperature, m.concurrency, m.depth_verdict)
    if trained is not None and m.temperature == 0 and computed.kind == "exact" and computed.topk == 1:
        reference = accept_depths.survival(m.reference_histogram)
        m.trained_survival = trained.survival[:len(reference)]
        m.trained_depths_ok, m.trained_depth_verdict = accept_depths.trained_depth_verdict(reference, trained)
        if not m.trained_depths_ok:
            log.warning("[bench] WARNING T=0 c=%d: the reference is %s", m.concurrency, m.trained_depth_verdict)


def _prompts_of(pool, bench, m) -> list:
    """The prompts level ``m`` sent (``workload.level_prompts``)."""
    return level_prompts(pool, bench, concurrency=m.concurrency, request_rate=m.request_rate, phase=m.phase)


def _compute_in_subprocess(run: PreparedRun, prompts, setting, max_new_tokens: int, gpu_pool: list[str] | None,
                           share: int = 1, sampling=None):
    """The reference in a process of its own (``python -m automodel_spec.bench.reference``) on one leased GPU.

    Its own process, so that the job's (in a serial sweep, every point's) keeps no CUDA context or
    cached memory beside the next point's server; a leased GPU, so that points of a parallel sweep do
    not compute on a GPU another point's server holds (where servers share a GPU, ``share``, the
    reference takes a sharer's place and computes while no server starts, stops or is measured).
    """
    import os
    import subprocess
    import sys
    import tempfile
    from contextlib import ExitStack

    import automodel_spec
    from automodel_spec.serve.gpu_pool import (
        gpu_lock_names,
        gpu_phase,
        lease_dir,
        lease_gpus,
        pinned_env,
        visible_gpus,
    )

    ref = _reference_module()
    pool, source = visible_gpus(gpu_pool)
    with tempfile.TemporaryDirectory(prefix="automodel-spec-reference-") as tmp, ExitStack() as stack:
        gpus = stack.enter_context(lease_gpus(pool, 1, lease_dir(), source=source, share=share)) if pool else None
        if gpus and share > 1:
            stack.enter_context(gpu_phase(gpu_lock_names(gpus), lease_dir(), exclusive=True))
        lines = [{"id": p.id, "category": p.category,
                  **({"input_ids": list(p.input_ids)} if p.input_ids is not None else {"prompt": p.text})}
                 for p in prompts]
        (Path(tmp) / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        out = Path(tmp) / "reference.json"
        argv = [sys.executable, "-m", "automodel_spec.bench.reference", "--target", str(run.target),
                "--draft", str(run.export.path), "--num-steps", str(setting.num_steps), "--topk",
                str(setting.topk or 1), "--prompts", str(Path(tmp) / "prompts.jsonl"), "--num-prompts",
                str(len(prompts)), "--max-new-tokens", str(max_new_tokens), "--json", str(out)]
        argv += _sampling_args(setting, sampling)
        if gpus:
            argv += ["--device", "cuda", "--workers", str(reference_workers(run, gpus, len(prompts)))]
        env = dict(pinned_env(gpus) or os.environ)
        root = str(Path(automodel_spec.__file__).resolve().parents[1])  # importable however we were
        env["PYTHONPATH"] = os.pathsep.join(x for x in (root, env.get("PYTHONPATH")) if x)
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SpecError(f"the reference exited {proc.returncode}: {' / '.join(tail)[-600:]}")
        return ref.reference_from_dict(json.loads(out.read_text()))


REFERENCE_WORKERS = 4  # processes computing one reference on a GPU: each decodes its slice of the prompts
REFERENCE_WORKER_OVERHEAD = 2 * 2**30  # bytes a worker holds beside the float32 weights (CUDA context, caches)


def reference_workers(run: PreparedRun, gpus: list[str], num_prompts: int) -> int:
    """How many processes compute a reference on ``gpus`` side by side: up to ``REFERENCE_WORKERS`` (one
    process leaves a GPU mostly idle between its small passes), as many as the GPU's free memory holds
    with the weights in float32 (the reference's dtype) in each, never more than the prompts; 1 where
    the weights or the free memory are unknown."""
    from automodel_spec.bench.placement import weights_bytes

    weights, free_mib = weights_bytes(run), nvidia_smi.free_mib(gpus)
    if not weights or free_mib is None:
        return 1
    per_worker = 2 * weights + REFERENCE_WORKER_OVERHEAD  # bfloat16 files, float32 in memory
    return max(1, min(REFERENCE_WORKERS, num_prompts, int(0.8 * free_mib * 2**20 // per_worker)))


def _sampling_args(setting, sampling) -> list[str]:
    """The reference's arguments for the tree's size and the level's verify settings."""
    out = []
    if (setting.topk or 1) > 1 and setting.num_draft_tokens is not None:
        out += ["--num-draft-tokens", str(setting.num_draft_tokens)]
    if sampling is not None and sampling.temperature > 0:
        out += ["--temperature", repr(sampling.temperature), "--threshold-single", repr(sampling.threshold_single),
                "--threshold-acc", repr(sampling.threshold_acc), "--samples", str(sampling.samples),
                "--sample-seed", str(sampling.seed)] + (["--rejection-sampling"] if sampling.rejection else [])
    return out


def _cached_reference(cache_dir: Path | None, run: PreparedRun, prompts, setting, max_new_tokens: int,
                      gpu_pool: list[str] | None = None, share: int = 1, sampling=None):
    """The reference, from ``cache_dir/<key>.json`` when a point of this sweep computed it already."""
    ref = _reference_module()

    def compute():
        return _compute_in_subprocess(run, prompts, setting, max_new_tokens, gpu_pool, share, sampling)

    if cache_dir is None:
        return compute()
    import hashlib

    from automodel_spec.io.atomic_write import write_json_atomically
    from automodel_spec.io.file_lock import file_lock

    # the target's content when it was digested (a benchmark's run), else its config's mtime; the export's path
    # is named by its content unless draft.export_dir fixed it, hence its key too
    target_held = run.target_content or (Path(run.target).expanduser() / "config.json").stat().st_mtime_ns
    stamp = [str(Path(run.target).expanduser().resolve()), str(Path(run.export.path).resolve()), target_held,
             run.export.key, setting.num_steps, max_new_tokens,
             [[p.id, p.text, p.input_ids] for p in prompts], _sampling_args(setting, sampling)]
    key = hashlib.blake2b(json.dumps(stamp, default=str).encode(), digest_size=8).hexdigest()
    path = Path(cache_dir) / f"{key}.json"
    with file_lock(Path(cache_dir) / f"{key}.lock"):
        if path.is_file():
            try:
                cached = ref.reference_from_dict(json.loads(path.read_text()))
                if (setting.topk or 1) > 1 and setting.num_draft_tokens is None:  # a tree of unknown size
                    cached.topk, cached.num_draft_tokens = setting.topk, None  # its chain: a bound
                log.info("[bench] reference accept length shared with an earlier point (%s)", path)
                return cached
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable: computed again, and rewritten
        computed = compute()
        write_json_atomically(path, computed.to_dict())
        return computed


def record_level(r: dict) -> tuple:
    """The level a record belongs to: ``(temperature, concurrency, request rate, phase)``."""
    return (float(r.get("temperature", 0.0)), int(r["concurrency"]), r.get("request_rate"), r.get("phase"))


def read_outputs(records: Path) -> dict[tuple, list[int]]:
    """``(temperature, concurrency, request rate, phase, request index) -> output token ids`` from a
    ``records.jsonl`` (``record_level``).

    A file that cannot be read (missing, a directory) or a line of another shape gives nothing for it:
    the lossless check then compares fewer requests, and says how many.
    """
    out = {}
    try:
        text = records.read_text(errors="replace") if records.is_file() else ""
    except OSError:
        return out
    for line in text.splitlines():
        try:
            r = json.loads(line)
            if not (isinstance(r, dict) and r.get("ok") and isinstance(r.get("output_ids"), list)):
                continue
            out[(*record_level(r), int(r["i"]))] = r["output_ids"]
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two outputs differ (a length difference counts), ``None`` if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def add_lossless(result: PointResult, records: Path, baseline_records: Path | None) -> None:
    """Compare each temperature-0 request's output tokens with the baseline's; set the level's counts."""
    if baseline_records is None:
        return
    mine, base = read_outputs(records), read_outputs(baseline_records)
    for m in result.levels.values():
        if m.temperature != 0:
            continue
        pairs = [(ids, base[k]) for k, ids in mine.items() if _in_level(k, m) and k in base]
        diffs = [d for d in (first_difference(a, b) for a, b in pairs) if d is not None]
        m.lossless_compared, m.lossless_identical = len(pairs), len(pairs) - len(diffs)
        m.lossless_first_difference = min(diffs) if diffs else None
        if diffs:
            log.warning("[bench] WARNING T=0 c=%d: %d of %d outputs differ from the no-speculation baseline's "
                        "(first at output token %d)%s", m.concurrency, len(diffs), len(pairs), min(diffs),
                        ": near-ties that kernels of other shapes resolve differently do that to a few late "
                        "tokens; many outputs differing early do not")


def _in_level(key: tuple, m) -> bool:
    """Whether the output ``key`` (``read_outputs``) is of level ``m``: a phased run's whole level holds every phase's."""
    if m.phase == 0:
        return key[0] == 0.0 and key[3] is not None
    return key[:4] == (0.0, m.concurrency, m.request_rate, m.phase)


def check_failures(result: PointResult) -> list[str]:
    """Why ``mode=check`` fails this point (empty: the draft is served as trained).

    Outputs that differ from the baseline's are reported by ``check_report``, not failed on: kernels
    of other shapes resolve near-ties differently (the module's docstring).
    """
    if result.status != "ok":
        return [f"the served run {result.status}: {result.error or result.reason}"]
    ref = result.reference
    if ref is None or ref.status != "ok":
        return [f"no reference accept length: {ref.reason if ref else 'not computed'}"]
    out = []
    for m in result.levels.values():
        if m.served_as_trained is False:
            out.append(f"T={m.temperature:g} c={m.concurrency}: {m.reference_verdict}")
        if m.depths_as_trained is False:
            out.append(f"T={m.temperature:g} c={m.concurrency}: {m.depth_verdict}")
    return out


def check_point(point: BenchPoint) -> BenchPoint:
    """The point ``mode=check`` serves: one request at a time, with the reference on, at temperature 0
    (the lossless check) and at each configured temperature (``bench.temperature``); no request rate, no
    phases: what is checked is the draft, not a load."""
    from dataclasses import replace

    temps = sorted({0.0, *(float(t) for t in point.bench.temperature)})
    bench = replace(point.bench, reference=True, temperature=temps, concurrency=[1], objective_concurrency=None,
                    objective_temperature=None, request_rate=None, phases=None)
    return replace(point, bench=bench)


def check_report(result: PointResult) -> tuple[int, str]:
    """(exit code, what ``mode=check`` prints): 0 when the draft is served as trained and losslessly."""
    failures = check_failures(result)
    if failures:
        return 1, "check FAILED:\n" + "\n".join(f"  - {f}" for f in failures)
    m = result.level(0.0, 1)
    same = (f"; outputs identical to the no-speculation baseline's {m.lossless_identical}/{m.lossless_compared}"
            if m is not None and m.lossless_compared else "")
    if m is not None and m.lossless_identical < m.lossless_compared:
        same += f" (first difference at token {m.lossless_first_difference}: a warning, see docs/benchmarks.md)"
    levels = sorted(result.levels.values(), key=lambda lv: (lv.temperature, lv.concurrency))
    said = "; ".join(f"T={lv.temperature:g} ({lv.reference_kind or '-'}): {lv.reference_verdict or ''}"
                     for lv in levels) if len(levels) > 1 else (m.reference_verdict if m is not None else "")
    return 0, f"check passed: {said}{same}"
