#!/usr/bin/env python3
"""Overhead of this project's path against a hand-typed ``python -m sglang.launch_server``.

    python scripts/bench_overhead.py --draft RUN_DIR --target MODEL_DIR [--rounds 1] [-- SGLANG FLAGS...]

Measures, alternating the two so drift hits both: time to ready (process start to a 200 from
/health_generate) and output tokens/s of the same greedy workload at batch 1. "Ours" is
``prepare_run`` (resolve + export, from the cache after the first run) plus ``SGLangServer``;
"hand" is Popen of the identical argv polled with plain urllib. Prints a table; writes
overhead.json to $OUT or the current directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from automodel_spec.bench.client import run_requests, sampling_params
from automodel_spec.bench.workload import load_prompts, select_prompts
from automodel_spec.config import DraftConfig, ServeConfig, SGLangConfig, SpecConfig, TargetConfig
from automodel_spec.launch import launch_command, open_server
from automodel_spec.prepare import prepare_run
from automodel_spec.server import pick_port


def _workload(generate, n: int, max_new: int) -> float:
    prompts = select_prompts(load_prompts(), n, seed=0)
    params = sampling_params(max_new, 0.0)
    run_requests(generate, prompts[:2], 1, params, progress=False)  # warm-up
    records, wall = run_requests(generate, prompts, 1, params, progress=False)
    return sum(r.get("completion_tokens", 0) for r in records if r.get("ok")) / wall


def ours(cfg: ServeConfig, log_dir: Path, n: int, max_new: int) -> dict:
    t0 = time.monotonic()
    run = prepare_run(cfg)
    prep = time.monotonic() - t0
    server = open_server(cfg, run, log_dir, log_name="ours.log")
    with server:
        ready = time.monotonic() - t0
        tps = _workload(lambda p: server.generate(p), n, max_new)
    return {"prepare_s": prep, "ready_s": ready, "tok_per_s": tps}


def hand(cfg: ServeConfig, log_dir: Path, n: int, max_new: int) -> dict:
    run = prepare_run(cfg)  # untimed: the hand-typed path uses the same exported draft
    port = pick_port("127.0.0.1", 0)
    argv = launch_command(cfg, run, port)
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with open(log_dir / "hand.log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"hand-typed server exited with {proc.returncode}; see {log_dir}/hand.log")
                try:
                    urllib.request.urlopen(base + "/health_generate", timeout=5).read()
                    break
                except Exception:
                    time.sleep(1.0)
            ready = time.monotonic() - t0

            def gen(payload):
                req = urllib.request.Request(base + "/generate", data=json.dumps(payload).encode(),
                                             headers={"Content-Type": "application/json"})
                return json.loads(urllib.request.urlopen(req, timeout=600).read())

            tps = _workload(gen, n, max_new)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return {"ready_s": ready, "tok_per_s": tps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--topk", type=int, default=1)
    ap.add_argument("--python", default=None, help="interpreter that runs sglang.launch_server")
    ap.add_argument("sglang_args", nargs="*", help="after --: extra server flags for both paths")
    args = ap.parse_args()
    cfg = ServeConfig(draft=DraftConfig(path=args.draft), target=TargetConfig(path=args.target),
                      spec=SpecConfig(num_steps=args.steps, topk=args.topk),
                      sglang=SGLangConfig(port=0, python=args.python, extra_args=list(args.sglang_args)))
    out = Path(os.environ.get("OUT") or ".")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(args.rounds):
        for name, fn in (("hand", hand), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("hand", hand)):
            res = fn(cfg, out, args.prompts, args.max_new_tokens)
            rows.append({"round": r, "path": name, **res})
            print(json.dumps(rows[-1]), flush=True)
    (out / "overhead.json").write_text(json.dumps(rows, indent=2) + "\n")
    mean = {p: {k: sum(x[k] for x in rows if x["path"] == p) / max(1, sum(x["path"] == p for x in rows))
                for k in ("ready_s", "tok_per_s")} for p in ("hand", "ours")}
    print(f"{'path':6} {'ready_s':>8} {'tok/s':>9}")
    for p, m in mean.items():
        print(f"{p:6} {m['ready_s']:8.1f} {m['tok_per_s']:9.1f}")
    print(f"throughput ratio ours/hand: {mean['ours']['tok_per_s'] / mean['hand']['tok_per_s']:.3f}; "
          f"time to ready added: {mean['ours']['ready_s'] - mean['hand']['ready_s']:+.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
