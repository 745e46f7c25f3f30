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
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from automodel_spec.bench.capacity import check_kv_capacity, draft_slots
from automodel_spec.bench.client import run_requests, sampling_params
from automodel_spec.bench.metrics import add_speedups, summarize_level
from automodel_spec.bench.open_loop import run_open_loop
from automodel_spec.bench.phases import closed_loop_concurrencies, run_phased_load
from automodel_spec.bench.placement import placed_server
from automodel_spec.bench.point import BenchPoint, baseline_of
from automodel_spec.bench.result import (
    METRICS,
    SCHEMA_VERSION,
    LevelResult,
    PointResult,
    ReferenceSummary,
    ResultSchemaError,
    SpecSettings,
    card_models,
    read_point,
    split_server_settings,
    write_point,
)
from automodel_spec.bench.served_checks import add_lossless, add_reference
from automodel_spec.bench.server_exit import MemoryWatch, server_exit
from automodel_spec.bench.stream import stream_generate
from automodel_spec.bench.workload import (
    Prompt,
    context_length,
    fit_to_context,
    level_prompts,
    load_prompts,
    prompts_content_key,
    select_prompts,
)
from automodel_spec.config.schema import BenchConfig, Objective, SpecConfig
from automodel_spec.config.sglang_options import (
    INFO_ACCEPT_LENGTH,
    INFO_ALGORITHM,
    INFO_KV_TOKENS,
    INFO_NUM_STEPS,
)
from automodel_spec.config.spec_rules import point_errors, resolve_spec
from automodel_spec.errors import ConfigError, ServerError, SpecError
from automodel_spec.export.target import read_target_config
from automodel_spec.io import nvidia_smi
from automodel_spec.io.file_lock import file_lock, file_lock_if_free
from automodel_spec.io.path_lookup import directory_problem
from automodel_spec.launch import effective_settings
from automodel_spec.prepare import PreparedRun

RECORDS = "records.jsonl"
SCHEMA = SCHEMA_VERSION
log = logging.getLogger(__name__)


# Each bench.* setting, classified once for a point's identity (``point_key``); a test holds the three
# against BenchConfig's fields, so a new field must be placed here. (Every bench.* setting is shared by
# a sweep's points, so none names a point's directory: conf/hydra/bench_sweep.yaml's exclude_keys lists
# them all, which the same test checks.)
# What the point measures: a change measures the point again.
BENCH_MEASURED = ("prompts", "num_prompts", "concurrency", "max_new_tokens", "temperature", "warmup_requests",
                  "seed", "baseline", "gpu_pool", "request_rate", "duration_s", "max_concurrency", "phases", "slo",
                  "long_prompts")
# Not part of it, kept in the key at a fixed value (as keys written before were): the sweep's name, a
# timeout, and the sweeper's objective level.
BENCH_BLANKED = {"name": "", "request_timeout_s": 0.0, "objective_concurrency": None, "objective_temperature": None}
# Not part of it, left out of the key (absent from keys written before they existed, so those stay valid):
# what a sweep ranks by, waits and GPU sharing (which change no measurement), and checks of the measurement.
BENCH_DROPPED = ("objective", "gpu_free_wait_s", "servers_per_gpu", "reference", "expected_accept_length")


def point_key(cfg: BenchPoint, run: PreparedRun, context: dict[str, Any] | None = None) -> str:
    """What makes two points the same measurement.

    The port, the API key, timeouts and waits, the sweep's name and the sweeper's objective level are
    not part of it (``BENCH_BLANKED``, ``BENCH_DROPPED``): re-running a sweep with a longer
    ``sglang.ready_timeout_s`` reuses its finished points. What the target and the draft hold is
    (``PreparedRun.target_content``, the export's content key, their revisions): a pair retrained at the
    same paths is measured again. So is what else decides it (``context``, ``measurement_context``): the
    prompts file's content, the models of the host's GPUs and the SGLang release installed, so a sweep
    resumed after the prompts were edited in place, on another machine or after an upgrade reuses only what
    the same prompts, card and release measured.
    """
    sg = replace(cfg.sglang, port=0, api_key=None, ready_timeout_s=0.0, stop_timeout_s=0.0)
    bench = asdict(replace(cfg.bench, **BENCH_BLANKED))
    for name in BENCH_DROPPED:
        del bench[name]
    if bench["long_prompts"] == "refuse":  # refused prompts are never measured: the default keeps older keys
        del bench["long_prompts"]
    identity = {"schema": SCHEMA, "target": run.target, "draft": run.draft.path if run.draft else None,
                "algorithm": asdict(cfg.algorithm), "spec": asdict(cfg.spec), "sglang": asdict(sg), "bench": bench}
    # what the target and the draft hold, beside their paths: a path keeps its name when the weights behind it
    # are retrained or replaced (each added only when known, so the keys of hub pairs without revisions stay)
    contents = {"target_content": run.target_content, "target_revision": run.target_revision,
                "draft_content": run.export.key if run.export else None,
                "draft_revision": run.draft.revision if run.draft else None}
    identity.update({k: v for k, v in contents.items() if v})
    identity.update({k: v for k, v in (context or {}).items() if v})  # each only when known
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def baseline_key(cfg: BenchPoint, run: PreparedRun, context: dict[str, Any] | None = None) -> str:
    base = replace(baseline_of(cfg), bench=replace(cfg.bench, baseline=False))
    return point_key(base, _baseline_run(run), context)


def measurement_context(bench: BenchConfig, sglang_installed: str | None) -> dict[str, Any]:
    """What decides a measurement beside its configuration and its pair: what the prompts file holds
    (``workload.prompts_content_key``: ``bench.prompts`` names a path, which keeps its name when edited), the
    models of this host's GPUs (``result.card_models``: not which card of a model) and the SGLang release
    installed where the server runs (``launch.check_sglang_installed``); each left out where unknown."""
    found = {"prompts_content": prompts_content_key(bench.prompts), "cards": card_models(_gpu_names()),
             "sglang": sglang_installed}
    return {k: v for k, v in found.items() if v}


def _baseline_run(run: PreparedRun) -> PreparedRun:
    """The run without its draft (the target, as it is served)."""
    return PreparedRun(target=run.target, target_revision=run.target_revision, target_content=run.target_content)


def read_complete(path: Path, key: str) -> PointResult | None:
    """A finished ``metrics.json`` for ``key`` (status ok or invalid), else ``None``: measured again.

    A result of another schema is measured again (its key differs: the schema is part of it). One that
    cannot be read (truncated, of the wrong shape, a directory) is said with its reason and measured
    again; what is not a file is first moved aside (``set_aside``), so the new result can be written.
    """
    try:
        data = read_point(path)
    except ResultSchemaError as exc:
        if os.path.lexists(path):  # (a missing file is a point not measured yet: nothing to say)
            aside = set_aside(path)
            why = str(exc).removeprefix(f"{path}: ").rstrip(".")
            kept = f"; what was there is kept as {aside.name}" if aside else ""
            log.warning("[bench] %s is unreadable (%s): the point is measured again%s", path, why, kept)
        return None
    return data if data.key == key and data.status in ("ok", "invalid") else None


def set_aside(path: Path) -> Path | None:
    """Move ``path`` out of the way when it is not a regular file (a directory, a fifo, a dangling link),
    as ``NAME.unreadable-N`` beside it; return that, or ``None`` when nothing was moved. Nothing is deleted:
    what a user or a damaged disk put there stays to be looked at."""
    if not os.path.lexists(path) or path.is_file():
        return None
    for n in range(1, 1000):
        aside = path.with_name(f"{path.name}.unreadable-{n}")
        if not os.path.lexists(aside):
            os.rename(path, aside)
            return aside
    raise SpecError(f"{path} is not a file and cannot be moved aside (999 earlier ones are there): remove them.")


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
    write_result(out_dir / METRICS, result)
    log.info("[bench] %s: skipped, invalid setting: %s", out_dir.name, result.reason)
    return result


def objective(result: PointResult, bench) -> float:
    """What a sweeper maximizes at the objective level (0 if failed): output tokens/s, or with
    ``bench.objective=goodput`` the requests/s served within ``bench.slo``'s goals (0 where the level missed
    them: a setting that misses the goals ranks below every one that meets them)."""
    if result.status != "ok":
        return 0.0
    conc = bench.objective_concurrency if bench.objective_concurrency is not None else bench.concurrency[0]
    temp = bench.objective_temperature if bench.objective_temperature is not None else bench.temperature[0]
    lv = result.level(temp, conc)
    if lv is None:
        return 0.0
    if bench.objective == Objective.goodput:
        return float(lv.goodput_rps or 0.0) if lv.slo_met else 0.0
    return float(lv.output_tok_per_s or 0.0)


def run_benchmark_job(cfg: BenchPoint, run: PreparedRun, out_dir: Path,
                      shared_dir: Path | None = None, sglang_installed: str | None = None) -> PointResult:
    """Benchmark one point; write ``out_dir/metrics.json``; return it.

    Args:
        cfg: the point, a valid setting (an invalid one is recorded by ``record_if_invalid`` instead).
        run: the prepared target and draft.
        out_dir: this job's directory.
        shared_dir: where the sweep keeps its baseline (default: ``out_dir``).
        sglang_installed: the SGLang release that serves (``None``: unknown), part of the point's identity.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    context = measurement_context(cfg.bench, sglang_installed)
    key = point_key(cfg, run, context)
    done = read_complete(out_dir / METRICS, key)
    if done is not None:
        log.info("[bench] %s: already complete (%s); skipped", out_dir.name, done.status)
        if done.status == "ok" and cfg.bench.reference and (done.reference is None or done.reference.status != "ok"):
            base = Path(done.baseline_dir) / RECORDS if done.baseline_dir else None
            _check_served(cfg, run, out_dir, done, base, (shared_dir or out_dir).resolve() / "reference")
            write_result(out_dir / METRICS, done)  # measured before the reference was asked for: added now
        return done
    result = PointResult(status="failed", key=key, algorithm=cfg.algorithm.name,
                         requested=requested_settings(run.spec), bench=asdict(cfg.bench), target=run.target,
                         draft=run.draft.path if run.draft else None, target_content=run.target_content,
                         draft_content=run.export.key if run.export else None, sglang_installed=sglang_installed,
                         prompts_content=context.get("prompts_content"), started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    t0 = time.monotonic()
    try:
        baseline, wants_baseline = None, cfg.bench.baseline and cfg.algorithm.name is not None
        if wants_baseline:
            base_dir = (shared_dir or out_dir).resolve() / "baseline"
            if problem := directory_problem(base_dir):  # e.g. a file of that name where the sweep keeps it
                raise ConfigError(f"the shared baseline's directory {base_dir} cannot be made: {problem}. Move that "
                                  "out of the way, or set bench.baseline=false (no speed-ups).")
            base_key = baseline_key(cfg, run, context)
            result.baseline_dir = str(base_dir / base_key)
            baseline = measure_baseline(cfg, run, base_dir, wait=False, context=context)
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
    except OSError as exc:  # the disk refused a write of the point's files
        result.error = f"{type(exc).__name__}: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}"
    except Exception as exc:
        result.error, result.traceback = f"{type(exc).__name__}: {exc}", traceback.format_exc()[-3000:]
    result.gpu_seconds = gpu_seconds(cfg, time.monotonic() - t0)
    log.info("%s", one_line(out_dir.name, result))
    write_result(out_dir / METRICS, result)
    return result


def write_result(path: Path, result: PointResult) -> None:
    """``write_point``, a refusal of the disk said as such (the point is then measured again next time).

    Raises:
        SpecError: the file cannot be written (a full disk, a read-only one, its directory removed).
    """
    try:
        write_point(path, result)
    except OSError as exc:
        raise SpecError(f"cannot write the point's result {path}: {exc.strerror or exc}. Free space on that disk, or "
                        "give output_dir= (a sweep: hydra.sweep.dir=) a directory on one that can be written; the "
                        "point is measured again on the next run.") from exc


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
        add_reference(cfg, run, result, workload(cfg, run)[0], reference_dir)
    except Exception as exc:  # a bug in the reference must not turn a measured point into a failed one
        result.reference = ReferenceSummary(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500])
        log.warning("[bench] WARNING: the reference accept length failed: %s", result.reference.reason)


def measure_baseline(cfg: BenchPoint, run: PreparedRun, base_dir: Path, wait: bool = True,
                     context: dict[str, Any] | None = None) -> PointResult | None:
    """The no-speculation measurement for this target/workload/server, measured once and shared.

    Args:
        wait: when another job is measuring it, wait for its result; with ``False`` return ``None``
            at once instead (a parallel sweep's point does not idle for a server it does not need).
        context: what else decides it (``measurement_context``), part of its key as of every point's.
    """
    key = baseline_key(cfg, run, context)
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
                             target_content=run.target_content, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                             sglang_installed=(context or {}).get("sglang"),
                             prompts_content=(context or {}).get("prompts_content"))
        _measure(baseline_of(cfg), _baseline_run(run), path.parent, result, log_name="server.log")
        failed = sum(m.failed_requests for m in result.levels.values())
        if failed:  # not cached: the next point measures it again
            raise ServerError(f"the baseline had {failed} failed request(s); see {path.parent / RECORDS}")
        result.status, result.gpu_seconds = "ok", gpu_seconds(cfg, time.monotonic() - t0)
        write_result(path, result)
        return result


def workload(cfg: BenchPoint, run: PreparedRun) -> tuple[list[Prompt], str | None]:
    """The prompts a point draws its requests from (``bench.prompts``), without those the target's context
    cannot take (``workload.fit_to_context``), and what was left out in words (``None``: nothing).

    Raises:
        ConfigError: the prompts file cannot be used, or a prompt is too long and ``bench.long_prompts``
            is ``refuse``.
    """
    b = cfg.bench
    pool = load_prompts(b.prompts)
    target = Path(run.target).expanduser() if run.target else None
    local = target is not None and target.is_dir()
    context = context_length(read_target_config(run.target) if local else None, cfg.sglang.context_length)
    return fit_to_context(pool, context=context, max_new_tokens=b.max_new_tokens,
                          tokenizer_file=target / "tokenizer.json" if local else None, policy=b.long_prompts,
                          source=b.prompts)


def _check_requests(records: list[dict], label: str, where: Path, server, since: float, watch) -> None:
    """Fail the point when any request of a level (or the warm-up) failed, or none produced a token.

    A server that exited meanwhile is reported for what it is (``server_exit``) rather than by its
    requests' "connection refused".

    Raises:
        ServerError: the server exited, or requests failed (their count and the first one's error).
    """
    failed = [r for r in records if not r.get("ok")]
    gone = _exit_after(server, [r.get("error", "") for r in failed], since, watch)
    if gone is not None:
        raise ServerError(gone.message())
    if failed:
        first = failed[0]
        raise ServerError(f"{label}: {len(failed)} of {len(records)} request(s) failed, e.g. request {first['i']} "
                          f"(prompt {first.get('prompt_id')}): {first.get('error')}. Every request is in {where}.")
    if records and not sum(r.get("completion_tokens") or 0 for r in records):
        raise ServerError(f"{label}: the server answered every request with no token; see {where}.")


def _exit_after(server, errors: list[str], since: float, watch):
    """``server_exit`` once the server has had time to end, where ``errors`` say it may be ending: a refused
    connection (gone) waits up to 8 s, a closed one (gone, or a single request dropped) 1 s, since the
    launcher ends a few seconds after the server, once it has swept the server's process group."""
    wait_s = 8.0 if any("connection refused" in e.lower() for e in errors) else \
        1.0 if any("closed the connection" in e or "reset" in e.lower() for e in errors) else 0.0
    if wait_s and server.proc is not None:
        try:
            server.proc.wait(timeout=wait_s)
        except Exception:  # still running: the errors are its answers
            pass
    return server_exit(server, since, watch)


def _measure(cfg: BenchPoint, run: PreparedRun, out_dir: Path, result: PointResult, log_name: str) -> None:
    """Start the server, run every level, and fill ``result`` (levels, what the server reported, costs)."""
    b = cfg.bench
    pool, left_out = workload(cfg, run)
    if left_out:
        log.warning("[bench] %s", left_out)
    if cfg.sglang.skip_tokenizer_init and any(p.input_ids is None for p in pool):
        raise ConfigError("sglang.skip_tokenizer_init=true needs prompts with input_ids (bench.prompts=FILE.jsonl).")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (RECORDS, log_name):  # a directory where a file goes (a damaged sweep directory)
        if aside := set_aside(out_dir / name):
            log.warning("[bench] %s was not a file: moved aside as %s", out_dir / name, aside.name)
    with placed_server(cfg, run, out_dir, log_name=log_name) as placed, open(out_dir / RECORDS, "w") as rec_file, \
            MemoryWatch() as watch, _exit_told(placed.server, watch) as since:
        server = placed.server
        where = Path(rec_file.name)
        result.gpus, result.other_gpu_processes, result.idle_servers = placed.gpus, placed.others, placed.idle_servers
        result.server_log = str(server.log_path)
        url = server.base_url + "/generate"
        gen = lambda payload: stream_generate(url, payload, timeout=b.request_timeout_s,  # noqa: E731
                                              api_key=server.api_key)
        closed = closed_loop_concurrencies(b.phases) if b.phases else b.concurrency
        warm = select_prompts(pool, max(b.warmup_requests, max(closed, default=1)), b.seed + 1)
        records, _ = run_requests(gen, warm, max(closed, default=1),
                                  sampling_params(b.max_new_tokens, b.temperature[0]), label="warm-up", progress=False)
        _check_requests(records, "the warm-up", where, server, since, watch)
        settings = effective_settings(server.server_info())
        result.boot_s = server.boot_s
        result.effective, result.server_settings = _split(settings)
        steps = settings.get(INFO_NUM_STEPS)
        kv_tokens, slots = settings.get(INFO_KV_TOKENS), draft_slots(settings)
        check_kv_capacity(kv_tokens, max(closed, default=1), 0, b.max_new_tokens, slots)  # before any level runs
        who = "spec" if cfg.algorithm.name else "baseline"

        def keep(records: list[dict], m: LevelResult, temp: float, conc: int | None, label: str) -> None:
            _write_records(rec_file, records, temp)
            _check_requests(records, f"level {label}", where, server, since, watch)
            if conc is not None:  # a closed loop: with the prompts' real lengths, `conc` requests at once?
                longest = max((r.get("prompt_tokens") or 0 for r in records), default=0)
                check_kv_capacity(kv_tokens, conc, longest, b.max_new_tokens, slots)
            if not m.phase:  # the server's running average spans every phase (no flush between them): the whole's
                m.server_accept_length = effective_settings(server.server_info()).get(INFO_ACCEPT_LENGTH)
            result.levels[m.key] = m

        for temp in b.temperature:
            params = sampling_params(b.max_new_tokens, temp)
            if b.phases:  # one load that changes, instead of the levels
                server.flush_cache()  # once: the phases run on without a flush
                for run in run_phased_load(gen, pool, b, params, steps, temperature=temp, label=f"{who} T={temp:g}"):
                    closed_phase = run.level.phase and run.level.request_rate is None
                    keep(run.records, run.level, temp, run.level.concurrency if closed_phase else None,
                         f"{who} T={temp:g} {run.level.key}")
                continue
            for conc in b.concurrency:
                prompts = level_prompts(pool, b, concurrency=conc)
                server.flush_cache()  # resets the server's running accept-length average too
                label = f"{who} T={temp:g} c={conc}"
                records, wall = run_requests(gen, prompts, conc, params, label=label)
                keep(records, summarize_level(records, wall, steps, temperature=temp, concurrency=conc, slo=b.slo),
                     temp, conc, label)
            for rate in b.request_rate or []:
                cap = b.max_concurrency or 0
                prompts = level_prompts(pool, b, concurrency=cap, request_rate=rate)
                server.flush_cache()
                label = f"{who} T={temp:g} rate={rate:g}/s"
                run = run_open_loop(gen, prompts, rate, params, seed=b.seed, max_concurrency=b.max_concurrency,
                                    duration_s=b.duration_s, label=label, concurrency=cap)
                m = summarize_level(run.records, run.wall_s, steps, temperature=temp, concurrency=cap,
                                    request_rate=rate, unsent=run.unsent, window_s=run.window_s, slo=b.slo)
                keep(run.records, m, temp, None, label)
    result.gpu = _gpu_names()


@contextmanager
def _exit_told(server, watch: MemoryWatch):
    """Yield the time the benchmark began; an error of a server that has exited meanwhile (a query of it
    refused) becomes the report of its exit (``server_exit``)."""
    since = time.monotonic()
    try:
        yield since
    except ServerError:
        raise
    except Exception as exc:
        gone = _exit_after(server, [str(exc)], since, watch)
        if gone is None:
            raise
        raise ServerError(gone.message()) from exc


def _write_records(rec_file, records: list[dict], temperature: float) -> None:
    """A level's records, one JSON line each; a full disk said for the file it hit."""
    try:
        for r in records:
            rec_file.write(json.dumps({**r, "temperature": temperature}) + "\n")
        rec_file.flush()
    except OSError as exc:
        raise SpecError(f"cannot write {rec_file.name}: {exc.strerror or exc}. Free space on that disk, or give "
                        "output_dir= a directory on one with room.") from exc


def _split(settings: dict) -> tuple[SpecSettings | None, dict]:
    """``effective_settings`` -> (the speculative setting the server uses, the other settings)."""
    eff, rest = split_server_settings(settings)
    if eff is None or settings.get(INFO_ALGORITHM) is None:  # no speculation: no setting
        return None, rest
    return SpecSettings(**eff), rest


def one_line(name: str, result: PointResult) -> str:
    """The console summary of a finished point."""
    if result.status != "ok":  # the first line cut short; what follows it (a server's last lines) kept
        first, _, rest = (result.reason or result.error or "").partition("\n")
        return f"[bench] {name}: {result.status}: {first[:600]}" + (f"\n{rest}" if rest else "")
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
        parts.append(f"{_load(m)}: {tps} tok/s{sp}{al}{_latencies(m)}{more}")
    return f"[bench] {name}: boot {result.boot_s or 0:.0f}s; " + "; ".join(parts)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _load(m: LevelResult) -> str:
    """``T=0 c=8``, ``T=0 rate=4/s`` (``c<=N`` with a cap), ``T=0 phase 2 c8``, ``T=0 phased c1 -> c8``."""
    if m.phase is not None:
        return f"T={m.temperature:g} " + (f"phase {m.phase} {m.phase_load}" if m.phase else f"phased {m.phase_load}")
    if m.request_rate is not None:
        return f"T={m.temperature:g} rate={m.request_rate:g}/s" + (f" c<={m.concurrency}" if m.concurrency else "")
    return f"T={m.temperature:g} c={m.concurrency}"


def _latencies(m: LevelResult) -> str:
    """The streaming p99s, the open loop's achieved rate and saturation, the goodput, for the console line."""
    out = ""
    if m.streamed:  # each p50/p90/p99
        out += (f" ttft {_pcts(m, 'ttft')} itl {_pcts(m, 'itl')} (per token {_pcts(m, 'itl_token')}) "
                f"tpot {_pcts(m, 'tpot')}")
    if m.request_rate is not None:
        out += f" achieved {_f(m.achieved_rate_rps)}/s" + (" SATURATED" if m.saturated else "")
    if m.slo_met is not None:
        out += f" goodput {_f(m.goodput_rps)}/s " + ("goals met" if m.slo_met else "goals MISSED")
    return out


def _pcts(m: LevelResult, name: str) -> str:
    """``12.1/13.0/15.2ms``: a latency's p50/p90/p99 in milliseconds."""
    values = [getattr(m, f"{name}_p{q}_s") for q in (50, 90, 99)]
    return "/".join("-" if v is None else f"{v * 1e3:.1f}" for v in values) + "ms"


def _gpu_names() -> list[str] | None:
    """The GPUs of this host, so results from different cards are told apart."""
    return [", ".join(row) for row in nvidia_smi.query("gpu=name,uuid") or []] or None

