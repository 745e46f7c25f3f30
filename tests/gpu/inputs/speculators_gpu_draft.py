#!/usr/bin/env python3
"""Write a speculators-format EAGLE-3 draft holding a benchmark pair's draft tensors, with speculators' code.

    python tests/gpu/inputs/speculators_gpu_draft.py --pair /tmp/bench8b --out /tmp/bench8b/speculators

``--pair`` is a directory made by ``scripts/gpu/build_bench_pair.py``: ``target/`` (the verifier) and
``run/`` (an Automodel EAGLE-3 run whose draft uses the "repeat" construction, so SGLang accepts every
draft token at T=0). The draft is built the way ``speculators train --dry-run`` builds one
(``TrainConfig.resolve`` -> ``parse_vocab_mappings`` -> ``build_draft_model`` ->
``Eagle3DraftModel.from_training_args``, which also loads the verifier's embedding and lm_head), then
its weights are replaced by the pair's draft tensors under speculators' names and it is saved with
``save_pretrained`` in bfloat16, as the dry run saves. Every tensor written is checked bit for bit
against the pair's.

Flags are the ones under which SGLang computes what the draft computes: no norm before the
residual, no norm before fc, no norm on the fed-back state, full attention (no sliding window).
Aux layer ids are written in speculators' numbering (the input of target layer i), i.e. Automodel's
ids (layer outputs) plus one.

Needs speculators 0.9.0 importable (on an offline machine: the wheels in ``.whl/``, installed with
``pip install --no-index --no-deps --target DIR .whl/*.whl`` and ``PYTHONPATH=DIR``). Memory: about
five times the draft's bfloat16 size in host RAM (the model is built in float32).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", required=True, type=Path, help="directory from scripts/gpu/build_bench_pair.py")
    ap.add_argument("--out", required=True, type=Path, help="directory for the speculators draft")
    args = ap.parse_args()
    hide_broken_modules()
    target = (args.pair / "target").resolve()
    draft_dir = automodel_draft_dir(args.pair / "run")
    config = json.loads((draft_dir / "config.json").read_text())
    tensors = load_tensors(draft_dir)
    aux_ids = speculators_aux_ids(config, json.loads((target / "config.json").read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        model, argv = build_speculators_draft(target, config, tensors, aux_ids, Path(tmp), args.out)
    save_draft(model, tensors, args.out)
    print(f"wrote {args.out}: speculators EAGLE-3 draft, aux ids {aux_ids} (speculators numbering), "
          f"draft vocab {config.get('draft_vocab_size')}; built as `speculators train {' '.join(argv)}`")
    return 0


def hide_broken_modules() -> None:
    """Hide torchvision/torchaudio from transformers where they cannot load (a CUDA build beside CPU torch)."""
    for name in ("torchvision", "torchaudio"):
        if subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode:
            sys.modules[name] = None  # type: ignore[assignment]


def automodel_draft_dir(run: Path) -> Path:
    """The HF directory of the run's newest checkpoint: ``LATEST`` -> ``model/consolidated`` or ``model``."""
    latest = run / "LATEST"
    step = latest.resolve() if latest.is_symlink() else run / latest.read_text().strip()
    for candidate in (step / "model" / "consolidated", step / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise SystemExit(f"no config.json under {step}/model[/consolidated]: is {run} a build_bench_pair run?")


def load_tensors(model_dir: Path) -> dict:
    """All tensors of ``model.safetensors`` or of the shards its index names."""
    from safetensors.torch import load_file

    index = model_dir / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else ["model.safetensors"])
    tensors = {}
    for name in files:
        tensors.update(load_file(str(model_dir / name)))
    return tensors


def speculators_name(name: str) -> str:
    """Automodel's ``model.layers.0.x`` / ``model.fc.weight`` -> speculators' ``layers.0.x`` / ``fc.weight``."""
    return name[len("model."):] if name.startswith("model.") else name


def speculators_aux_ids(draft_config: dict, target_config: dict) -> list[int]:
    """Automodel/SGLang ids name layer outputs; speculators/vLLM ids name layer inputs: add one."""
    ids = (draft_config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    if ids is None:  # Automodel's default, which is also SGLang's
        n = int(target_config["num_hidden_layers"])
        ids = [1, n // 2 - 1, n - 4]
    return [int(i) + 1 for i in ids]


def _cli_argv(target: Path, config: dict, aux_ids: list[int], vocab_dir: Path, out: Path) -> list[str]:
    """The ``speculators train --dry-run`` flags that give this draft's architecture."""
    vocab = int(config["draft_vocab_size"])
    argv = ["--dry-run", "--speculator-type", "eagle3", "--verifier-name-or-path", str(target),
            "--data-path", str(vocab_dir), "--draft-vocab-size", str(vocab),
            "--d2t-path", str(vocab_dir / f"d2t-{vocab}.npy"), "--t2d-path", str(vocab_dir / f"t2d-{vocab}.npy"),
            "--mask-token-id", "0", "--seed", "0", "--num-layers", "1", "--draft-arch", "llama",
            "--draft-hidden-act", config.get("hidden_act", "silu"), "--no-norm-before-residual",
            "--no-norm-before-fc", "--no-norm-output", "--full-attention-indices", "0",
            "--target-layer-ids", *map(str, aux_ids), "--save-path", str(out)]
    if config.get("fc_norm"):
        argv.insert(argv.index("--no-norm-output"), "--fc-norm")
    return argv


def build_speculators_draft(target: Path, config: dict, tensors: dict, aux_ids: list[int], tmp: Path,
                            out: Path):
    """Build the model as ``speculators train --dry-run`` does, then load the pair's tensors into it."""
    import numpy as np
    from speculators.model import SpeculatorModel
    from speculators.train.cli import build_draft_model, parse_vocab_mappings, set_seed
    from speculators.train.config import TrainConfig

    vocab = int(config["draft_vocab_size"])
    np.save(tmp / f"d2t-{vocab}.npy", tensors["d2t"].numpy())  # speculators reads the map from .npy files
    np.save(tmp / f"t2d-{vocab}.npy", tensors["t2d"].numpy())
    argv = _cli_argv(target, config, aux_ids, tmp, out)
    cfg = TrainConfig.resolve(argv)
    cli_args = argparse.Namespace(**cfg.flatten())
    set_seed(cli_args.seed)
    cfg.save(cli_args.save_path)  # run.yaml + train_command.txt, as the dry run writes them
    d2t, t2d, draft_vocab_size = parse_vocab_mappings(cli_args)
    model_class = SpeculatorModel.registry[cli_args.speculator_type]
    model = build_draft_model(cli_args, model_class, t2d, d2t, draft_vocab_size)
    load_pair_tensors(model, tensors)
    return model, argv


def load_pair_tensors(model, tensors: dict) -> None:
    """Copy every pair tensor into the parameter or buffer of the same speculators name; refuse leftovers."""
    state = model.state_dict()
    renamed = {speculators_name(n): t for n, t in tensors.items()}
    unknown = sorted(n for n in renamed if n not in state)
    wrong = sorted(n for n, t in renamed.items() if n in state and tuple(state[n].shape) != tuple(t.shape))
    # verifier_* are speculators' training-only copies of the target's head (never saved); input_norm
    # exists only with norm_before_fc, which is off here.
    unset = sorted(n for n in state if n not in renamed and not n.startswith("verifier_"))
    if unknown or wrong or unset:
        raise SystemExit(f"tensor mismatch: unknown to speculators {unknown}, wrong shape {wrong}, "
                         f"left at speculators' initial values {unset}")
    model.load_state_dict({n: t.to(state[n].dtype) for n, t in renamed.items()}, strict=False)


def save_draft(model, tensors: dict, out: Path) -> None:
    """Save in bfloat16 (the dry run's dtype) and check each tensor against the pair's."""
    import torch
    from safetensors.torch import load_file

    model.to(torch.bfloat16)
    model.save_pretrained(str(out))
    saved = load_file(str(out / "model.safetensors")) if (out / "model.safetensors").is_file() else \
        load_tensors(out)
    for name, tensor in tensors.items():
        got = saved.get(speculators_name(name))
        if got is None or got.dtype != tensor.dtype or not torch.equal(got, tensor):
            raise SystemExit(f"{speculators_name(name)} was not written as the pair's {name}")


if __name__ == "__main__":
    sys.exit(main())
