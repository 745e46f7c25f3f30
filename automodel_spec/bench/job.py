"""One benchmark point: one server, one setting, every concurrency level, one ``metrics.json``.

The job is self-contained (its own port and output directory), so any Hydra launcher can run
many of them. It is resumable: a point whose ``metrics.json`` is complete for the same settings is
skipped. An invalid setting is recorded as such and skipped; a crash is recorded as failed and
the sweep goes on. The no-speculation baseline is measured once per sweep (same target,
workload and server settings) and shared by every point through a locked file: the first job to
take the lock measures it; jobs running beside it go on with their own point rather than wait, and
the sweep summary joins their speedups once the baseline is there (``sweep.rows``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

from automodel_spec import nvidia_smi
from automodel_spec.bench.capacity import SERVER_INFO_KEY, check_kv_capacity, draft_slots
from automodel_spec.bench.client import run_requests, sampling_params
from automodel_spec.bench.metrics import add_speedups, summarize_level
from automodel_spec.bench.placement import placed_server
from automodel_spec.bench.point import BenchPoint, baseline_of
from automodel_spec.bench.result import (
    METRICS,
    SCHEMA_VERSION,
    PointResult,
    ReferenceSummary,
    ResultSchemaError,
    SpecSettings,
    read_point,
    split_server_settings,
    write_point,
)
from automodel_spec.bench.served_checks import add_lossless, add_reference
from automodel_spec.bench.workload import load_prompts, select_prompts
from automodel_spec.config import SpecConfig
from automodel_spec.errors import ConfigError, ServerError, SpecError
from automodel_spec.file_lock import file_lock, file_lock_if_free
from automodel_spec.launch import effective_settings
from automodel_spec.prepare import PreparedRun
from automodel_spec.spec_rules import point_errors, resolve_spec

RECORDS = "records.jsonl"
SCHEMA = SCHEMA_VERSION
log = logging.getLogger(__name__)


def point_key(cfg: BenchPoint, run: PreparedRun) -> str:
    """What makes two points the same measurement.

    The port, the API key, timeouts and waits, the sweep's name and the sweeper's objective level are
    not part of it: re-running a sweep with a longer ``sglang.ready_timeout_s`` reuses its finished points.
    """
    sg = replace(cfg.sglang, port=0, api_key=None, ready_timeout_s=0.0, stop_timeout_s=0.0)
    bench = asdict(replace(cfg.bench, name="", request_timeout_s=0.0, objective_concurrency=None,
                           objective_temperature=None))
    # absent from keys written before they existed: those stay valid; sharing a GPU changes no measurement
    del bench["gpu_free_wait_s"], bench["servers_per_gpu"]
    del bench["reference"], bench["expected_accept_length"]  # checks of the measurement, not part of it
    blob = json.dumps({"schema": SCHEMA, "target": run.target, "draft": run.draft.path if run.draft else None,
                       "algorithm": asdict(cfg.algorithm), "spec": asdict(cfg.spec), "sglang": asdict(sg),
                       "bench": bench}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def baseline_key(cfg: BenchPoint, run: PreparedRun) -> str:
    base = replace(baseline_of(cfg), bench=replace(cfg.bench, baseline=False))
    return point_key(base, _baseline_run(run))


def _baseline_run(run: PreparedRun) -> PreparedRun:
    """The run without its draft (the target, as it is served)."""
    return PreparedRun(target=run.target, target_revision=run.target_revision)


def read_complete(path: Path, key: str) -> PointResult | None:
    """A finished ``metrics.json`` for ``key`` (status ok or invalid), else ``None``.

    A result of another schema is measured again (its key differs: the schema is part of it).
    """
    try:
        data = read_point(path)
    except ResultSchemaError:
        return None
    return data if data.key == key and data.status in ("ok", "invalid") else None


def requested_settings(spec: SpecConfig) -> SpecSettings:
    """What the server is asked for, from a resolved spec (``PreparedRun.spec``: draft tokens derived)."""
    return SpecSettings(num_steps=spec.num_steps, topk=spec.topk, num_draft_tokens=spec.num_draft_tokens,
                        adaptive=spec.adaptive, adaptive_config=spec.adaptive_config)


def record_if_invalid(cfg: BenchPoint, out_dir: Path) -> PointResult | None:
    """Record a setting SGLang would reject (``spec_rules.point_errors``), so a sweep lists it as skipped
    and why; ``None`` when the setting is valid (nothing is written)."""
    reasons = point_errors(cfg.algorithm, cfg.spec)
    if not reasons:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    # an invalid point is never prepared, so no PreparedRun carries its resolved spec: resolved here
    result = PointResult(status="invalid", algorithm=cfg.algorithm.name,
                         requested=requested_settings(resolve_spec(cfg.spec)),
                         bench=asdict(cfg.bench), reason=" ".join(reasons))
    write_point(out_dir / METRICS, result)
    log.info("[bench] %s: skipped, invalid setting: %s", out_dir.name, result.reason)
    return result


def objective(result: PointResult, bench) -> float:
    """What a sweeper maximizes: output tokens/s at the objective level (0 if failed)."""
    if result.status != "ok":
        return 0.0
    conc = bench.objective_concurrency if bench.objective_concurrency is not None else bench.concurrency[0]
    temp = bench.objective_temperature if bench.objective_temperature is not None else bench.temperature[0]
    lv = result.level(temp, conc)
    return float(lv.output_tok_per_s or 0.0) if lv is not None else 0.0


def run_benchmark_job(cfg: BenchPoint, run: PreparedRun, out_dir: Path,
                      shared_dir: Path | None = None) -> PointResult:
    """Benchmark one point; write ``out_dir/metrics.json``; return it.

    Args:
        cfg: the point, a valid setting (an invalid one is recorded by ``record_if_invalid`` instead).
        run: the prepared target and draft.
        out_dir: this job's directory.
        shared_dir: where the sweep keeps its baseline (default: ``out_dir``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    key = point_key(cfg, run)
    done = read_complete(out_dir / METRICS, key)
    if done is not None:
        log.info("[bench] %s: already complete (%s); skipped", out_dir.name, done.status)
        if done.status == "ok" and cfg.bench.reference and (done.reference is None or done.reference.status != "ok"):
            base = Path(done.baseline_dir) / RECORDS if done.baseline_dir else None
            _check_served(cfg, run, out_dir, done, base, (shared_dir or out_dir).resolve() / "reference")
            write_point(out_dir / METRICS, done)  # measured before the reference was asked for: added now
        return done
    result = PointResult(status="failed", key=key, algorithm=cfg.algorithm.name,
                         requested=requested_settings(run.spec), bench=asdict(cfg.bench), target=run.target,
                         draft=run.draft.path if run.draft else None, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    t0 = time.monotonic()
    try:
        baseline, wants_baseline = None, cfg.bench.baseline and cfg.algorithm.name is not None
        if wants_baseline:
            base_dir = (shared_dir or out_dir).resolve() / "baseline"
            base_key = baseline_key(cfg, run)
            result.baseline_dir = str(base_dir / base_key)
            baseline = measure_baseline(cfg, run, base_dir, wait=False)
            t0 = time.monotonic()  # the shared baseline's time is its own (baseline/<key>/metrics.json)
        _measure(cfg, run, out_dir, result, log_name="server.log")
        if wants_baseline and baseline is None:  # measured by another job meanwhile?
            baseline = read_complete(base_dir / base_key / METRICS, base_key)
        add_speedups(result.levels, baseline.levels if baseline else None)
        _check_served(cfg, run, out_dir, result, Path(result.baseline_dir) / RECORDS if baseline else None,
                      (shared_dir or out_dir).resolve() / "reference")
        result.status = "ok"
        failed = sum(m.failed_requests for m in result.levels.values())
        if failed:  # numbers from a partly failed workload are not comparable: retry on re-run
            result.status, result.error = "failed", f"{failed} request(s) failed; see {out_dir / RECORDS}"
    except SpecError as exc:
        result.error = str(exc)
    except Exception as exc:
        result.error, result.traceback = f"{type(exc).__name__}: {exc}", traceback.format_exc()[-3000:]
    result.gpu_seconds = gpu_seconds(cfg, time.monotonic() - t0)
    write_point(out_dir / METRICS, result)
    log.info("%s", one_line(out_dir.name, result))
    return result


def gpu_seconds(cfg: BenchPoint, elapsed_s: float) -> float:
    """The GPU time a point cost: its server holds all its GPUs (``sglang.tp_size``) for ``elapsed_s``,
    and shares each with up to ``bench.servers_per_gpu`` - 1 other servers, each charged its share."""
    return elapsed_s * cfg.sglang.tp_size / max(1, cfg.bench.servers_per_gpu)


def _check_served(cfg: BenchPoint, run: PreparedRun, out_dir: Path, result: PointResult,
                  baseline_records: Path | None, reference_dir: Path) -> None:
    """The lossless check and the reference (``bench.served_checks``), after the server has stopped.

    Neither can lose the measurement: an unexpected error is recorded as the reference's failure.
    """
    add_lossless(result, out_dir / RECORDS, baseline_records)
    try:
        add_reference(cfg, run, result, load_prompts(cfg.bench.prompts), reference_dir)
    except Exception as exc:  # a bug in the reference must not turn a measured point into a failed one
        result.reference = ReferenceSummary(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500])
        log.warning("[bench] WARNING: the reference accept length failed: %s", result.reference.reason)


def measure_baseline(cfg: BenchPoint, run: PreparedRun, base_dir: Path, wait: bool = True) -> PointResult | None:
    """The no-speculation measurement for this target/workload/server, measured once and shared.

    Args:
        wait: when another job is measuring it, wait for its result; with ``False`` return ``None``
            at once instead (a parallel sweep's point does not idle for a server it does not need).
    """
    key = baseline_key(cfg, run)
    path = base_dir / key / METRICS
    lock = file_lock(base_dir / f"{key}.lock") if wait else file_lock_if_free(base_dir / f"{key}.lock")
    with lock as held:
        if held is False:
            log.info("[bench] the no-speculation baseline is being measured by another job; this point "
                     "goes on without waiting (its speedup is joined in the sweep summary)")
            return read_complete(path, key)
        done = read_complete(path, key)
        if done is not None:
            return done
        log.info("[bench] measuring the no-speculation baseline once for this sweep (%s)", path.parent)
        t0 = time.monotonic()
        result = PointResult(status="failed", key=key, bench=asdict(cfg.bench), target=run.target,
                             started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        _measure(baseline_of(cfg), _baseline_run(run), path.parent, result, log_name="server.log")
        failed = sum(m.failed_requests for m in result.levels.values())
        if failed:  # not cached: the next point measures it again
            raise ServerError(f"the baseline had {failed} failed request(s); see {path.parent / RECORDS}")
        result.status, result.gpu_seconds = "ok", gpu_seconds(cfg, time.monotonic() - t0)
        write_point(path, result)
        return result


def _measure(cfg: BenchPoint, run: PreparedRun, out_dir: Path, result: PointResult, log_name: str) -> None:
    """Start the server, run every level, and fill ``result`` (levels, what the server reported, costs)."""
    b = cfg.bench
    pool = load_prompts(b.prompts)
    if cfg.sglang.skip_tokenizer_init and any(p.input_ids is None for p in pool):
        raise ConfigError("sglang.skip_tokenizer_init=true needs prompts with input_ids (bench.prompts=FILE.jsonl).")
    out_dir.mkdir(parents=True, exist_ok=True)
    with placed_server(cfg, run, out_dir, log_name=log_name) as placed, open(out_dir / RECORDS, "w") as rec_file:
        server = placed.server
        result.gpus, result.other_gpu_processes, result.idle_servers = placed.gpus, placed.others, placed.idle_servers
        result.server_log = str(server.log_path)
        gen = lambda payload: server.generate(payload, timeout=b.request_timeout_s)  # noqa: E731
        warm = select_prompts(pool, max(b.warmup_requests, max(b.concurrency)), b.seed + 1)
        run_requests(gen, warm, max(b.concurrency), sampling_params(b.max_new_tokens, b.temperature[0]),
                     label="warm-up", progress=False)
        settings = effective_settings(server.server_info())
        result.boot_s = server.boot_s
        result.effective, result.server_settings = _split(settings)
        steps = settings.get("speculative_num_steps")
        kv_tokens, slots = settings.get(SERVER_INFO_KEY), draft_slots(settings)
        check_kv_capacity(kv_tokens, max(b.concurrency), 0, b.max_new_tokens, slots)  # before any level runs
        for temp in b.temperature:
            params = sampling_params(b.max_new_tokens, temp)
            for conc in b.concurrency:
                # enough requests that the server holds `conc` of them for most of the level
                prompts = select_prompts(pool, max(b.num_prompts, 2 * conc), b.seed)
                server.flush_cache()  # resets the server's running accept-length average too
                label = f"{'spec' if cfg.algorithm.name else 'baseline'} T={temp:g} c={conc}"
                records, wall = run_requests(gen, prompts, conc, params, label=label)
                for r in records:
                    rec_file.write(json.dumps({**r, "temperature": temp}) + "\n")
                # with the prompts' real lengths: a level that could not run `conc` requests at once fails
                longest = max((r.get("prompt_tokens") or 0 for r in records), default=0)
                check_kv_capacity(kv_tokens, conc, longest, b.max_new_tokens, slots)
                m = summarize_level(records, wall, steps, temperature=temp, concurrency=conc)
                m.server_accept_length = effective_settings(server.server_info()).get("avg_spec_accept_length")
                result.levels[m.key] = m
    result.gpu = _gpu_names()


def _split(settings: dict) -> tuple[SpecSettings | None, dict]:
    """``effective_settings`` -> (the speculative setting the server uses, the other settings)."""
    eff, rest = split_server_settings(settings)
    if eff is None or settings.get("speculative_algorithm") is None:  # no speculation: no setting
        return None, rest
    return SpecSettings(**eff), rest


def one_line(name: str, result: PointResult) -> str:
    """The console summary of a finished point."""
    if result.status != "ok":
        return f"[bench] {name}: {result.status}: {(result.reason or result.error or '')[:300]}"
    parts = []
    for m in result.levels.values():
        sp = f" x{m.speedup:.2f}" if m.speedup else ""
        al = f" accept {m.accept_length:.2f}" if m.accept_length else ""
        tps = f"{m.output_tok_per_s:.1f}" if m.output_tok_per_s is not None else "-"
        notes = []
        if m.reference_accept_length is not None or m.served_as_trained is False:
            word = "served as trained" if m.served_as_trained else "NOT SERVED AS TRAINED"
            span = " [{:.2f}, {:.2f}]".format(*m.reference_interval) if m.reference_interval else ""
            kind = f" {m.reference_kind}" if m.reference_kind else ""
            depths = "; depths short" if m.depths_as_trained is False else ""
            notes.append(f"reference {_f(m.reference_accept_length)}{span}{kind}: {word}{depths}")
        if m.lossless_compared:
            notes.append(f"{m.lossless_identical}/{m.lossless_compared} identical to baseline")
        more = f" ({', '.join(notes)})" if notes else ""
        parts.append(f"T={m.temperature:g} c={m.concurrency}: {tps} tok/s{sp}{al}{more}")
    return f"[bench] {name}: boot {result.boot_s or 0:.0f}s; " + "; ".join(parts)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _gpu_names() -> list[str] | None:
    """The GPUs of this host, so results from different cards are told apart."""
    return [", ".join(row) for row in nvidia_smi.query("gpu=name,uuid") or []] or None

