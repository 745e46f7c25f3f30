#!/usr/bin/env python3
"""Build a synthetic benchmark pair offline: a Llama target and an EAGLE-3 draft in the Automodel layout.

    python scripts/build_bench_pair.py --out /tmp/bench8b --shape llama-3.1-8b --device cuda

The target has the shapes (bytes, FLOPs, kernels) of the named model; its weights use the repeat
construction (see automodel_spec/synthetic.py), so the draft's tokens are accepted under greedy
decoding and sampling temperature sets the accept length. ``--logit-scale`` scales the target's
lm_head: a smaller value makes the accept length fall at a lower temperature. Synthetic: compare
with published numbers only at equal accept length.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from automodel_spec import synthetic

SHAPES = {"tiny": synthetic.TINY, "llama-3.1-8b": synthetic.LLAMA_3_1_8B}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    ap.add_argument("--draft-vocab", type=int, default=32000)
    ap.add_argument("--logit-scale", type=float, default=1.0)
    ap.add_argument("--device", default="cuda", help="where to generate the weights (cuda: seconds; cpu: minutes)")
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    if args.draft_vocab > shape.vocab_size:
        print(f"--draft-vocab {args.draft_vocab} exceeds the vocab {shape.vocab_size}", file=sys.stderr)
        return 2
    target, run = args.out / "target", args.out / "run"
    if (target / "config.json").is_file() and (run / "LATEST").exists():
        print(f"exists: {target} and {run}")
        return 0
    t0 = time.time()
    synthetic.write_target(target, shape, repeat=True, logit_scale=args.logit_scale, device=args.device)
    tensors = synthetic.eagle3_draft_tensors(shape, args.draft_vocab, repeat=True, device=args.device)
    synthetic.write_automodel_run(run, synthetic.automodel_eagle3_config(shape, args.draft_vocab), tensors,
                                  selected_token_ids=list(range(args.draft_vocab)), vocab_size=shape.vocab_size)
    (args.out / "pair.json").write_text(json.dumps({"shape": args.shape, "draft_vocab": args.draft_vocab,
                                                    "logit_scale": args.logit_scale}) + "\n")
    print(f"built {target} and {run} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
