#!/usr/bin/env python3
"""Copy an exported EAGLE-3 draft and break it the way a known silent failure would, for serving as
given (scripts/gpu/real_pair/serve_as_given.py): SGLang starts and answers; only acceptance shows it.

    python3 scripts/gpu/real_pair/break_draft.py EXPORT_DIR OUT_DIR KIND --target TARGET_DIR

KIND:
- ``layers``: ``num_hidden_layers`` copied from the target (Automodel's config, unexported): SGLang
  builds the extra layers with no weights;
- ``aux_shift``: ``eagle_config.eagle_aux_hidden_state_layer_ids`` one lower than the layers the
  draft was trained on (a recipe's custom ids written off by one): the draft reads the wrong states;
- ``no_d2t``: the draft-to-target token map dropped from the weights: draft ids served as target ids;
- ``logit_flat``: the draft's lm_head divided by 4 (its softmax at temperature 4, a temperature or norm
  bug): every argmax, hence every greedy chain, is unchanged, so the chain check at T=0 passes; a tree's
  node choice multiplies the (now flatter) probabilities and changes, and rejection sampling at T > 0
  draws from the wrong distribution;
- ``logit_warm``: the lm_head halved (temperature 2): the same bug, milder;
- ``logit_sharp``: the lm_head times 4 (temperature 0.25): chains at T=0 unchanged again; trees lean
  to the first choice (they may accept more); rejection sampling at T > 0 accepts less.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

KINDS = ("layers", "aux_shift", "no_d2t", "logit_flat", "logit_warm", "logit_sharp")
LOGIT_SCALE = {"logit_flat": 0.25, "logit_warm": 0.5, "logit_sharp": 4.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--target", type=Path, required=True)
    args = ap.parse_args()
    if args.out.exists():
        print(f"{args.out} exists; give a new directory", file=sys.stderr)
        return 2
    shutil.copytree(args.src, args.out)
    cfg_path = args.out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    target = json.loads((args.target / "config.json").read_text())
    n = int(target["num_hidden_layers"])
    if args.kind == "layers":
        cfg["num_hidden_layers"] = n
    elif args.kind == "aux_shift":
        sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
        from automodel_spec.export.eagle3_layout import default_aux_layer_ids

        trained = (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") or default_aux_layer_ids(n)
        cfg["eagle_config"] = {**(cfg.get("eagle_config") or {}),
                               "eagle_aux_hidden_state_layer_ids": [i - 1 for i in trained]}
    elif args.kind in LOGIT_SCALE:
        from safetensors.torch import load_file, save_file

        scaled = 0
        for f in sorted(args.out.glob("*.safetensors")):
            tensors = load_file(str(f))
            if "lm_head.weight" in tensors:
                tensors["lm_head.weight"] = tensors["lm_head.weight"] * LOGIT_SCALE[args.kind]
                save_file(tensors, str(f), metadata={"format": "pt"})
                scaled += 1
        if not scaled:
            print(f"{args.src}: no lm_head.weight in the export (the target's is used): {args.kind} needs a draft "
                  "with its own lm_head", file=sys.stderr)
            shutil.rmtree(args.out)
            return 2
    else:
        from safetensors.torch import load_file, save_file

        for f in sorted(args.out.glob("*.safetensors")):
            tensors = load_file(str(f))
            if "d2t" in tensors:
                del tensors["d2t"]
                save_file(tensors, str(f), metadata={"format": "pt"})
        index = args.out / "model.safetensors.index.json"
        if index.is_file():
            data = json.loads(index.read_text())
            data["weight_map"].pop("d2t", None)
            index.write_text(json.dumps(data))
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (args.out / "automodel_spec_export.json").unlink(missing_ok=True)  # changed on purpose: no export of ours
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
