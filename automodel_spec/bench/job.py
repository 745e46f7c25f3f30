"""One benchmark point: one server, one setting, every concurrency level, one ``metrics.json``.

The job is self-contained (its own port and output directory), so any Hydra launcher can run
many of them. It is resumable: a point whose ``metrics.json`` is complete for the same settings is
skipped. An invalid setting is recorded as such and skipped; a crash is recorded as failed and
the sweep goes on. The no-speculation baseline is measured once per sweep (same target,
workload and server settings) and shared by every point through a locked file.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

from automodel_spec import nvidia_smi
from automodel_spec.atomic_write import write_json_atomically
from automodel_spec.bench.client import run_requests, sampling_params
from automodel_spec.bench.metrics import add_speedups, summarize_level
from automodel_spec.bench.placement import placed_server
from automodel_spec.bench.workload import load_prompts, select_prompts
from automodel_spec.config import AlgorithmConfig, ServeConfig, SpecConfig, resolve_spec, spec_errors
from automodel_spec.errors import ConfigError, ServerError, SpecError
from automodel_spec.file_lock import file_lock
from automodel_spec.launch import effective_settings
from automodel_spec.prepare import PreparedRun

METRICS = "metrics.json"
RECORDS = "records.jsonl"
SCHEMA = 2


def point_key(cfg: ServeConfig, run: PreparedRun) -> str:
    """What makes two points the same measurement.

    The port, the API key, timeouts and waits, the sweep's name and the sweeper's objective level are
    not part of it: re-running a sweep with a longer ``sglang.ready_timeout_s`` reuses its finished points.
    """
    sg = replace(cfg.sglang, port=0, api_key=None, ready_timeout_s=0.0, stop_timeout_s=0.0)
    bench = asdict(replace(cfg.bench, name="", request_timeout_s=0.0, objective_concurrency=None,
                           objective_temperature=None))
    del bench["gpu_free_wait_s"]  # absent from keys written before it existed: they stay valid
    blob = json.dumps({"schema": SCHEMA, "target": run.target, "draft": run.draft.path if run.draft else None,
                       "algorithm": asdict(cfg.algorithm), "spec": asdict(cfg.spec), "sglang": asdict(sg),
                       "bench": bench}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def baseline_key(cfg: ServeConfig, run: PreparedRun) -> str:
    base = replace(cfg, algorithm=AlgorithmConfig(name=None, architecture=None, needs_draft=False),
                   spec=SpecConfig(), bench=replace(cfg.bench, baseline=False))
    return point_key(base, PreparedRun(target=run.target))


def read_complete(path: Path, key: str) -> dict | None:
    """A finished ``metrics.json`` for ``key`` (status ok or invalid), else ``None``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("key") == key and data.get("status") in ("ok", "invalid") else None


def record_invalid_point(cfg: ServeConfig, out_dir: Path, reasons: list[str]) -> dict:
    """Record a setting SGLang would reject, so a sweep lists it as skipped (and why)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"key": None, "status": "invalid", "spec": asdict(cfg.spec), "algorithm": cfg.algorithm.name,
              "bench": asdict(cfg.bench), "reason": " ".join(reasons)}
    write_json_atomically(out_dir / METRICS, result)
    print(f"[bench] {out_dir.name}: skipped, invalid setting: {result['reason']}", flush=True)
    return result


def level_key(temperature: float, concurrency: int) -> str:
    """The key of one level in ``metrics.json`` (e.g. ``T0_c1``, ``T5.5_c8``)."""
    return f"T{temperature:g}_c{concurrency}"


def objective(result: dict, bench) -> float:
    """What a sweeper maximizes: output tokens/s at the objective level (0 if failed)."""
    if result.get("status") != "ok":
        return 0.0
    conc = bench.objective_concurrency if bench.objective_concurrency is not None else bench.concurrency[0]
    temp = bench.objective_temperature if bench.objective_temperature is not None else bench.temperature[0]
    return float(result["levels"].get(level_key(temp, conc), {}).get("output_tok_per_s") or 0.0)


def run_benchmark_job(cfg: ServeConfig, run: PreparedRun, out_dir: Path, shared_dir: Path | None = None) -> dict:
    """Benchmark one point; write ``out_dir/metrics.json``; return it.

    Args:
        cfg: the point's configuration (``mode=bench``).
        run: the prepared target and draft.
        out_dir: this job's directory.
        shared_dir: where the sweep keeps its baseline (default: ``out_dir``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    key = point_key(cfg, run)
    done = read_complete(out_dir / METRICS, key)
    if done is not None:
        print(f"[bench] {out_dir.name}: already complete ({done['status']}); skipped", flush=True)
        return done
    result = {"key": key, "status": "failed", "spec": asdict(resolve_spec(cfg.spec)), "algorithm": cfg.algorithm.name,
              "bench": asdict(cfg.bench), "target": run.target, "draft": run.draft.path if run.draft else None,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    invalid = spec_errors(cfg.spec) if cfg.algorithm.name else []
    if invalid:
        return record_invalid_point(cfg, out_dir, invalid)
    t0 = time.monotonic()
    try:
        baseline = None
        if cfg.bench.baseline and cfg.algorithm.name is not None:
            baseline = measure_baseline(cfg, run, (shared_dir or out_dir).resolve() / "baseline")
            result["baseline_dir"] = baseline.get("dir")
            t0 = time.monotonic()  # the shared baseline's time is its own (baseline/<key>/metrics.json)
        levels, extra = _measure(cfg, run, out_dir, log_name="server.log")
        add_speedups(levels, baseline["levels"] if baseline else None)
        result.update(status="ok", levels=levels, **extra)
        failed = sum(m["failed_requests"] for m in levels.values())
        if failed:  # numbers from a partly failed workload are not comparable: retry on re-run
            result.update(status="failed", error=f"{failed} request(s) failed; see {out_dir / RECORDS}")
    except SpecError as exc:
        result.update(error=str(exc))
    except Exception as exc:
        result.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
    result["gpu_seconds"] = (time.monotonic() - t0) * cfg.sglang.tp_size  # a server holds all its GPUs
    write_json_atomically(out_dir / METRICS, result)
    print(one_line(out_dir.name, result), flush=True)
    return result


def measure_baseline(cfg: ServeConfig, run: PreparedRun, base_dir: Path) -> dict:
    """The no-speculation measurement for this target/workload/server, measured once and shared."""
    key = baseline_key(cfg, run)
    path = base_dir / key / METRICS
    with file_lock(base_dir / f"{key}.lock"):
        done = read_complete(path, key)
        if done is not None:
            return done
        base_cfg = replace(cfg, algorithm=AlgorithmConfig(name=None, architecture=None, needs_draft=False),
                           spec=SpecConfig())
        print(f"[bench] measuring the no-speculation baseline once for this sweep ({path.parent})", flush=True)
        t0 = time.monotonic()
        levels, extra = _measure(base_cfg, PreparedRun(target=run.target), path.parent, log_name="server.log")
        failed = sum(m["failed_requests"] for m in levels.values())
        if failed:  # not cached: the next point measures it again
            raise ServerError(f"the baseline had {failed} failed request(s); see {path.parent / RECORDS}")
        result = {"key": key, "status": "ok", "levels": levels, "dir": str(path.parent),
                  "gpu_seconds": (time.monotonic() - t0) * cfg.sglang.tp_size, **extra}
        write_json_atomically(path, result)
        return result


def _measure(cfg: ServeConfig, run: PreparedRun, out_dir: Path, log_name: str) -> tuple[dict, dict]:
    b = cfg.bench
    pool = load_prompts(b.prompts)
    if cfg.sglang.skip_tokenizer_init and any(p.input_ids is None for p in pool):
        raise ConfigError("sglang.skip_tokenizer_init=true needs prompts with input_ids (bench.prompts=FILE.jsonl).")
    out_dir.mkdir(parents=True, exist_ok=True)
    levels: dict = {}
    with placed_server(cfg, run, out_dir, log_name=log_name) as placed, open(out_dir / RECORDS, "w") as rec_file:
        server = placed.server
        gen = lambda payload: server.generate(payload, timeout=b.request_timeout_s)  # noqa: E731
        warm = select_prompts(pool, max(b.warmup_requests, max(b.concurrency)), b.seed + 1)
        run_requests(gen, warm, max(b.concurrency), sampling_params(b.max_new_tokens, b.temperature[0]),
                     label="warm-up", progress=False)
        settings = effective_settings(server.server_info())
        steps = settings.get("speculative_num_steps")
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
                m = {"temperature": temp, "concurrency": conc, **summarize_level(records, wall, steps)}
                m["server_accept_length"] = effective_settings(server.server_info()).get("avg_spec_accept_length")
                levels[level_key(temp, conc)] = m
    extra = {"boot_s": server.boot_s, "effective": settings, "server_log": str(server.log_path), "gpu": _gpu_names(),
             "gpus": placed.gpus, "other_gpu_processes": placed.others}
    return levels, extra


def one_line(name: str, result: dict) -> str:
    """The console summary of a finished point."""
    if result["status"] != "ok":
        return f"[bench] {name}: {result['status']}: {result.get('reason') or result.get('error', '')[:300]}"
    parts = []
    for m in result["levels"].values():
        sp = f" x{m['speedup']:.2f}" if m.get("speedup") else ""
        al = f" accept {m['accept_length']:.2f}" if m.get("accept_length") else ""
        parts.append(f"T={m['temperature']:g} c={m['concurrency']}: {m['output_tok_per_s']:.1f} tok/s{sp}{al}")
    return f"[bench] {name}: boot {result.get('boot_s', 0):.0f}s; " + "; ".join(parts)


def _gpu_names() -> list[str] | None:
    """The GPUs of this host, so results from different cards are told apart."""
    return [", ".join(row) for row in nvidia_smi.query("gpu=name,uuid") or []] or None

