#!/usr/bin/env python3
"""Overhead of this project's path against a hand-typed ``python -m sglang.launch_server``.

    python scripts/gpu/bench_overhead.py --draft RUN_DIR --target MODEL_DIR [--rounds 4] [-- SGLANG FLAGS...]

Measures, alternating the two so drift hits both (round 0 hand-typed first, round 1 ours first, ...):
time to ready (process start to a 200 from /health_generate) and output tokens/s of the same greedy
workload at batch 1. "Ours" is ``prepare_run`` (resolve + export, from the cache after the first run)
plus ``SGLangServer``; "hand" is Popen of the identical argv polled with plain urllib. Each round
gives one throughput ratio (ours / hand) and one time-to-ready difference (ours - hand); the
summary is their mean and standard deviation over the rounds, and the mean's standard error, so a
1% or 2 s difference can be told from the noise (the targets: ratio >= 0.99, < 2 s added) only
with enough rounds (4 or more). Both paths poll readiness every 0.1 s. Prints a table; writes
overhead.json to $OUT or the current directory after every server, and ``--resume FILE`` continues
the rounds a FILE written earlier holds (a run cut off by a time limit loses one server at most);
``--deadline-s`` starts no server after that many seconds.
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
from automodel_spec.config.schema import DraftConfig, ServeConfig, SGLangConfig, SpecConfig, TargetConfig
from automodel_spec.io.console_log import log_to_console
from automodel_spec.launch import launch_command, open_server
from automodel_spec.prepare import prepare_run
from automodel_spec.serve.server import pick_port


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
    server = open_server(cfg.sglang, cfg.algorithm, run, log_dir, log_name="ours.log")
    with server:
        ready = time.monotonic() - t0
        tps = _workload(lambda p: server.generate(p), n, max_new)
    return {"prepare_s": prep, "ready_s": ready, "tok_per_s": tps}


def hand(cfg: ServeConfig, log_dir: Path, n: int, max_new: int) -> dict:
    run = prepare_run(cfg)  # untimed: the hand-typed path uses the same exported draft
    port = pick_port("127.0.0.1", 0)
    argv = launch_command(cfg.sglang, cfg.algorithm, run, port)
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
                    time.sleep(0.1)  # the same interval as SGLangServer's readiness poll
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
    ap.add_argument("--rounds", type=int, default=4, help="alternated rounds (>= 4 to see past the noise)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--topk", type=int, default=1)
    ap.add_argument("--python", default=None, help="interpreter that runs sglang.launch_server")
    ap.add_argument("--resume", type=Path, default=None, help="an overhead.json whose rows to continue")
    ap.add_argument("--deadline-s", type=float, default=None, help="start no server after this many seconds")
    ap.add_argument("--attention-backend", default="triton")
    ap.add_argument("--cuda-graph-bs", type=int, nargs="+", default=[1])
    ap.add_argument("--mem-fraction-static", type=float, default=0.6)
    ap.add_argument("sglang_args", nargs="*", help="after --: other server flags for both paths (flags that "
                    "sglang.* settings own are refused: give them above)")
    args = ap.parse_args()
    log_to_console()
    cfg = ServeConfig(draft=DraftConfig(path=args.draft), target=TargetConfig(path=args.target),
                      spec=SpecConfig(num_steps=args.steps, topk=args.topk),
                      sglang=SGLangConfig(port=0, python=args.python, attention_backend=args.attention_backend,
                                          cuda_graph_bs=args.cuda_graph_bs, cuda_graph_max_bs=None,
                                          disable_prefill_cuda_graph=True,
                                          mem_fraction_static=args.mem_fraction_static,
                                          extra_args=list(args.sglang_args)))
    out = Path(os.environ.get("OUT") or ".")
    out.mkdir(parents=True, exist_ok=True)
    rows = json.loads(args.resume.read_text())["rounds"] if args.resume and args.resume.is_file() else []
    done = {(x["round"], x["path"]) for x in rows}
    start, stopped = time.monotonic(), False
    for r in range(args.rounds):
        for name, fn in (("hand", hand), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("hand", hand)):
            if (r, name) in done or stopped:
                continue
            if args.deadline_s is not None and time.monotonic() - start > args.deadline_s:
                print(f"deadline: round {r} {name} not started (--resume continues)", file=sys.stderr)
                stopped = True
                continue
            res = fn(cfg, out, args.prompts, args.max_new_tokens)
            rows.append({"round": r, "path": name, **res})
            print(json.dumps(rows[-1]), flush=True)
            (out / "overhead.json").write_text(json.dumps({"rounds": rows, "summary": summarize(rows)},
                                                          indent=2) + "\n")
    summary = summarize(rows)
    print(f"{'round':>5} {'path':6} {'ready_s':>8} {'tok/s':>9}")
    for x in rows:
        print(f"{x['round']:>5} {x['path']:6} {x['ready_s']:8.1f} {x['tok_per_s']:9.1f}")
    r, d = summary["throughput_ratio"], summary["ready_delta_s"]
    print(f"throughput ratio ours/hand over {summary['rounds']} round(s): mean {r['mean']:.3f}, stdev "
          f"{_s(r['stdev'], 3)}, standard error {_s(r['sem'], 3)} (target >= 0.99)")
    print(f"time to ready added: mean {d['mean']:+.2f} s, stdev {_s(d['stdev'], 2)}, standard error "
          f"{_s(d['sem'], 2)} (target < 2 s)")
    if summary["rounds"] < 4:
        print("fewer than 4 rounds: the noise between rounds cannot be estimated well enough to show or refute "
              "the targets", file=sys.stderr)
    return 0


def summarize(rows: list[dict]) -> dict:
    """Per round, ours/hand throughput and ours - hand time to ready; their mean, stdev and standard error."""
    per_round = {}
    for x in rows:
        per_round.setdefault(x["round"], {})[x["path"]] = x
    pairs = [v for v in per_round.values() if "ours" in v and "hand" in v]
    ratios = [v["ours"]["tok_per_s"] / v["hand"]["tok_per_s"] for v in pairs]
    deltas = [v["ours"]["ready_s"] - v["hand"]["ready_s"] for v in pairs]
    return {"rounds": len(pairs), "throughput_ratio": _stats(ratios), "ready_delta_s": _stats(deltas)}


def _stats(xs: list[float]) -> dict:
    import statistics

    if not xs:
        return {"mean": None, "stdev": None, "sem": None, "values": []}
    sd = statistics.stdev(xs) if len(xs) > 1 else None
    return {"mean": statistics.fmean(xs), "stdev": sd, "sem": sd / len(xs) ** 0.5 if sd is not None else None,
            "values": xs}


def _s(v, nd: int) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


if __name__ == "__main__":
    sys.exit(main())
