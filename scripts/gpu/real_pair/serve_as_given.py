#!/usr/bin/env python3
"""Serve draft directories exactly as given (no export, no checks of ours) and measure what SGLang
accepts: for drafts handed over the way another tool hands them (Automodel's ``serve_sglang``) and for
drafts broken on purpose, whose server starts and answers while it accepts little.

    python3 scripts/gpu/real_pair/serve_as_given.py --target /tmp/real/target --out /tmp/real/as_given.json \\
        NAME=DRAFT_DIR[,TOKEN_MAP] [NAME=DRAFT_DIR ...]

Each draft gets a server of its own (EAGLE-3, chain ``--num-steps`` / topk 1, triton attention, CUDA
graphs for batch 1 only); with ``--parallel`` they start side by side on the one GPU, each with
``--mem-fraction`` of its memory (accept lengths do not depend on what else runs; speeds would,
so none is reported). The workload is the benchmark's: ``--prompts`` (a file or a named set such as
``humaneval``), ``--num-prompts`` in the benchmark's seeded order, greedy, ``--max-new-tokens``.
Writes one JSON object per draft: boot seconds, accept length, the accept histogram (rounds by
accepted drafts), each request's output token ids, and the server's last log lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from automodel_spec.bench.client import run_requests, sampling_params  # noqa: E402
from automodel_spec.bench.metrics import summarize_level  # noqa: E402
from automodel_spec.bench.workload import load_prompts, select_prompts  # noqa: E402
from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig  # noqa: E402
from automodel_spec.launch import sglang_release  # noqa: E402
from automodel_spec.serve.command import DraftArgs, build_launch_command  # noqa: E402
from automodel_spec.serve.server import SGLangServer, pick_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("drafts", nargs="+", help="NAME=DRAFT_DIR or NAME=DRAFT_DIR,TOKEN_MAP")
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--log-dir", type=Path, default=Path("/tmp/serve_as_given"))
    ap.add_argument("--num-steps", type=int, default=3)
    ap.add_argument("--prompts", default=None)
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="the benchmark's prompt order (bench.seed)")
    ap.add_argument("--parallel", action="store_true")
    ap.add_argument("--mem-fraction", type=float, default=0.6)
    ap.add_argument("--ready-timeout-s", type=float, default=400)
    args = ap.parse_args()

    prompts = select_prompts(load_prompts(args.prompts), args.num_prompts, args.seed)
    cases = []
    for item in args.drafts:
        name, _, rest = item.partition("=")
        path, _, token_map = rest.partition(",")
        cases.append((name, path, token_map or None))

    def one(case):
        return serve_one(*case, args, prompts)

    if args.parallel:
        with ThreadPoolExecutor(max_workers=len(cases)) as pool:
            results = list(pool.map(one, cases))
    else:
        results = [one(c) for c in cases]
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    for r in results:
        print(f"{r['name']:28} rc={r['rc']} boot={r.get('boot_s')} accept={r.get('accept_length')} "
              f"hist={r.get('accept_histogram')} {r.get('error', '')}", flush=True)
    return 0


def serve_one(name: str, path: str, token_map: str | None, args, prompts) -> dict:
    res = {"name": name, "draft": path, "token_map": token_map, "num_steps": args.num_steps}
    sg = SGLangConfig(attention_backend="triton", cuda_graph_bs=[1], max_running_requests=4,
                      mem_fraction_static=args.mem_fraction, disable_prefill_cuda_graph=True)
    port = pick_port("127.0.0.1", 0)
    spec = SpecConfig(num_steps=args.num_steps, topk=1, num_draft_tokens=args.num_steps + 1)
    argv = build_launch_command(args.target, sg, AlgorithmConfig(), spec, DraftArgs(path=path, token_map=token_map),
                                port=port, release=sglang_release(sg).release)
    res["argv"] = argv
    t0 = time.time()
    try:
        with SGLangServer(argv, f"http://127.0.0.1:{port}", args.log_dir / name,
                          ready_timeout_s=args.ready_timeout_s) as srv:
            res["boot_s"] = round(srv.boot_s, 1)
            records, wall = run_requests(srv.generate, prompts, 1, sampling_params(args.max_new_tokens, 0.0),
                                         progress=False)
            level = summarize_level(records, wall, args.num_steps)
            res.update(rc=0, accept_length=level.accept_length, accept_histogram=level.accept_histogram,
                       failed_requests=level.failed_requests, output_tokens=level.output_tokens,
                       output_ids=[r.get("output_ids") for r in records])  # the client keeps them
            res["log_tail"] = srv.log_tail(25)
    except Exception as exc:  # recorded: whichever way it goes is the finding
        res.update(rc="failed", error=f"{type(exc).__name__}: {exc}"[:600])
    res["wall_s"] = round(time.time() - t0, 1)
    return res


if __name__ == "__main__":
    sys.exit(main())
