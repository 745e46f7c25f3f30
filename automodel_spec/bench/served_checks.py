"""Two checks of what a benchmark point served: as trained (against the reference) and lossless.

* Served as trained: the draft's reference accept length (``automodel_spec.reference``, no SGLang)
  over the same prompts and steps, held against each temperature-0 level's served accept length
  (``reference.verdict``: within 5%).
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

from automodel_spec import nvidia_smi
from automodel_spec.bench.point import BenchPoint
from automodel_spec.bench.result import PointResult, ReferenceSummary
from automodel_spec.bench.workload import level_prompts
from automodel_spec.errors import SpecError
from automodel_spec.prepare import PreparedRun
from automodel_spec.signals import import_torch
from automodel_spec.target import read_target_config

log = logging.getLogger(__name__)


def _reference_module():
    from automodel_spec import reference

    return reference


def reference_plan(cfg: BenchPoint, run: PreparedRun, result: PointResult, n_prompts: int) -> str | None:
    """Why the reference is not computed for this point (``None``: compute it)."""
    ref = _reference_module()
    b = cfg.bench
    if b.reference is False:
        return "bench.reference=false"
    if cfg.algorithm.name not in ("EAGLE", "EAGLE3") or run.export is None:
        return f"algorithm={cfg.algorithm.name} has no exported EAGLE draft to compute"
    if 0.0 not in [float(t) for t in b.temperature]:
        return "no temperature-0 level (the reference is greedy)"
    setting = result.setting
    if setting.adaptive or setting.num_steps is None:
        return "the steps are chosen at run time (adaptive or unset): no fixed chain to compute"
    target_cfg = _local_target_config(run.target)
    if target_cfg is None:
        return f"target {run.target} is not a local directory (the reference loads it with local files only)"
    cost = ref.estimated_cost(target_cfg, n_prompts, b.max_new_tokens)
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
    """Compute the reference and set each temperature-0 level's reference and verdict on ``result``.

    A failure is recorded in ``result.reference`` (status ``failed``) and fails every verdict; it
    does not fail the measurement itself. With ``cache_dir`` (a sweep's shared directory) points of
    one draft and step count share one computation (their topk and draft tokens do not change it).
    """
    ref = _reference_module()
    b = cfg.bench
    per_level = {key: _prompts_of(pool, b, m) for key, m in result.levels.items() if m.temperature == 0}
    unique = list({p.id: p for prompts in per_level.values() for p in prompts}.values())
    why_not = reference_plan(cfg, run, result, len(unique))
    if why_not is not None:
        if b.reference is not None or cfg.algorithm.name in ("EAGLE", "EAGLE3"):
            result.reference = ReferenceSummary(status="skipped", reason=why_not)
            log.info("[bench] reference accept length not computed: %s", why_not)
        return
    setting = result.setting
    try:
        computed = _cached_reference(cache_dir, run, unique, setting, b.max_new_tokens, b.gpu_pool, b.servers_per_gpu)
    except SpecError as exc:
        result.reference = ReferenceSummary(status="failed", reason=str(exc))
        log.warning("[bench] WARNING: the reference accept length could not be computed: %s", exc)
        for m in result.levels.values():
            if m.temperature == 0:
                m.served_as_trained, m.reference_verdict = False, f"no reference: {exc}"
        return
    result.reference = ReferenceSummary(
        status="ok", accept_length=computed.accept_length, histogram=computed.histogram, num_steps=setting.num_steps,
        topk=setting.topk or 1, exact=computed.exact, problems=computed.problems, aux_layers=computed.aux_layers,
        device=computed.device, seconds=computed.seconds)
    by_id = {p.prompt_id: p for p in computed.prompts}
    for key, m in result.levels.items():
        if m.temperature != 0:
            continue
        mine = [by_id[p.id] for p in per_level[key]]
        m.reference_accept_length = ref.accept_length_of(mine)
        m.served_as_trained, m.reference_verdict = ref.verdict(
            m.accept_length, m.reference_accept_length, computed.problems, exact=computed.exact,
            min_accept_length=b.expected_accept_length)
        if not m.served_as_trained:
            log.warning("[bench] WARNING T=0 c=%d: %s", m.concurrency, m.reference_verdict)


def _prompts_of(pool, bench, m) -> list:
    """The prompts level ``m`` sent (``workload.level_prompts``)."""
    return level_prompts(pool, bench, concurrency=m.concurrency, request_rate=m.request_rate, phase=m.phase)


def _compute_in_subprocess(run: PreparedRun, prompts, setting, max_new_tokens: int, gpu_pool: list[str] | None,
                           share: int = 1):
    """The reference in a process of its own (``python -m automodel_spec.reference``) on one leased GPU.

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
    from automodel_spec.gpu_pool import (
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
        argv = [sys.executable, "-m", "automodel_spec.reference", "--target", str(run.target),
                "--draft", str(run.export.path), "--num-steps", str(setting.num_steps), "--topk",
                str(setting.topk or 1), "--prompts", str(Path(tmp) / "prompts.jsonl"), "--num-prompts",
                str(len(prompts)), "--max-new-tokens", str(max_new_tokens), "--json", str(out)]
        if gpus:
            argv += ["--device", "cuda"]
        env = dict(pinned_env(gpus) or os.environ)
        root = str(Path(automodel_spec.__file__).resolve().parents[1])  # importable however we were
        env["PYTHONPATH"] = os.pathsep.join(x for x in (root, env.get("PYTHONPATH")) if x)
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SpecError(f"the reference exited {proc.returncode}: {' / '.join(tail)[-600:]}")
        return ref.reference_from_dict(json.loads(out.read_text()))


def _cached_reference(cache_dir: Path | None, run: PreparedRun, prompts, setting, max_new_tokens: int,
                      gpu_pool: list[str] | None = None, share: int = 1):
    """The reference, from ``cache_dir/<key>.json`` when a point of this sweep computed it already."""
    ref = _reference_module()

    def compute():
        return _compute_in_subprocess(run, prompts, setting, max_new_tokens, gpu_pool, share)

    if cache_dir is None:
        return compute()
    import hashlib

    from automodel_spec.atomic_write import write_json_atomically
    from automodel_spec.file_lock import file_lock

    stamp = [str(Path(run.target).expanduser().resolve()), str(Path(run.export.path).resolve()),
             (Path(run.target).expanduser() / "config.json").stat().st_mtime_ns, setting.num_steps, max_new_tokens,
             [[p.id, p.text, p.input_ids] for p in prompts]]
    key = hashlib.blake2b(json.dumps(stamp, default=str).encode(), digest_size=8).hexdigest()
    path = Path(cache_dir) / f"{key}.json"
    with file_lock(Path(cache_dir) / f"{key}.lock"):
        if path.is_file():
            try:
                cached = ref.reference_from_dict(json.loads(path.read_text()))
                cached.topk = setting.topk or 1
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
        if m.temperature == 0 and m.served_as_trained is False:
            out.append(f"T=0 c={m.concurrency}: {m.reference_verdict}")
    return out


def check_point(point: BenchPoint) -> BenchPoint:
    """The point ``mode=check`` serves: greedy, one request at a time, with the reference on (no request rate,
    no phases: what is checked is the draft, not a load)."""
    from dataclasses import replace

    bench = replace(point.bench, reference=True, temperature=[0.0], concurrency=[1], objective_concurrency=None,
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
    return 0, f"check passed: {m.reference_verdict if m is not None else ''}{same}"
