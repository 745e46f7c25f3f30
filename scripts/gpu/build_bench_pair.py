#!/usr/bin/env python3
"""Build a synthetic benchmark pair offline: a Llama target and an EAGLE-3 draft in the Automodel layout.

    python scripts/gpu/build_bench_pair.py --out /tmp/bench8b --shape llama-3.1-8b --device cuda

The target has the shapes (bytes, FLOPs, kernels) of the named model; its weights use the repeat
construction (see automodel_spec/demo/synthetic.py), so the draft's tokens are accepted under greedy
decoding and sampling temperature sets the accept length. ``--logit-scale`` scales the target's
lm_head: a smaller value makes the accept length fall at a lower temperature. ``--spread K``
groups the vocabulary in runs of K ids that share the target's sampled probability (``--spread-gap``
below the repeated token's logit) and that the draft ranks first, so trees (topk >= K) are accepted
where chains are not; greedy decoding still accepts every draft. Synthetic: compare with published
numbers only at equal accept length.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from automodel_spec.demo import synthetic

SHAPES = {"tiny": synthetic.TINY, "llama-3.1-8b": synthetic.LLAMA_3_1_8B}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    ap.add_argument("--draft-vocab", type=int, default=32000)
    ap.add_argument("--logit-scale", type=float, default=1.0)
    ap.add_argument("--spread", type=int, default=1, help="token group size (1: the plain repeat pair)")
    ap.add_argument("--spread-gap", type=float, default=1.0, help="a group mate's logit below the repeated one's")
    ap.add_argument("--device", default="cuda", help="where to generate the weights (cuda: seconds; cpu: minutes)")
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    if args.draft_vocab > shape.vocab_size:
        print(f"--draft-vocab {args.draft_vocab} exceeds the vocab {shape.vocab_size}", file=sys.stderr)
        return 2
    if args.spread < 1 or args.draft_vocab % args.spread:
        print(f"--spread {args.spread} must be >= 1 and divide --draft-vocab {args.draft_vocab} (whole groups "
              "in the draft's vocabulary)", file=sys.stderr)
        return 2
    spec = {"shape": args.shape, "draft_vocab": args.draft_vocab, "logit_scale": args.logit_scale,
            "spread": args.spread, "spread_gap": args.spread_gap}
    target, run = args.out / "target", args.out / "run"
    done = args.out / "pair.json"  # written last: a pair without it is rebuilt
    if done.is_file() and (target / "config.json").is_file() and (run / "LATEST").exists():
        built = {"spread": 1, "spread_gap": 1.0, **json.loads(done.read_text())}
        if _same_pair(built, spec):
            print(f"exists: {target} and {run}")
            return 0
        print(f"{args.out} holds another pair ({built}); asked for {spec}. Use another --out or delete it.",
              file=sys.stderr)
        return 1
    t0 = time.time()
    spread = synthetic.Spread(size=args.spread, gap=args.spread_gap)
    synthetic.write_target(target, shape, repeat=True, logit_scale=args.logit_scale, spread=spread,
                           device=args.device)
    tensors = synthetic.eagle3_draft_tensors(shape, args.draft_vocab, repeat=True, spread=spread,
                                             device=args.device)
    synthetic.write_automodel_run(run, synthetic.automodel_eagle3_config(shape, args.draft_vocab), tensors,
                                  selected_token_ids=list(range(args.draft_vocab)), vocab_size=shape.vocab_size)
    done.write_text(json.dumps(spec) + "\n")
    print(f"built {target} and {run} in {time.time() - t0:.1f}s")
    return 0


def _same_pair(a: dict, b: dict) -> bool:
    keys = ["shape", "draft_vocab", "logit_scale", "spread"] + (["spread_gap"] if b["spread"] > 1 else [])
    return all(a.get(k) == b[k] for k in keys)


if __name__ == "__main__":
    sys.exit(main())
