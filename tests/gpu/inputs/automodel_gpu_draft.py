#!/usr/bin/env python3
"""Write the synthetic EAGLE-3 draft of a bench pair as NeMo Automodel 0.7.0 itself saves a run.

    pip install --no-deps --target /tmp/site .whl/*.whl          # on a machine without nemo_automodel
    PYTHONPATH=/tmp/site:. python tests/gpu/inputs/automodel_gpu_draft.py \\
        --pair /tmp/bench8b --out /tmp/bench8b/automodel_run

``--pair`` is a directory made by scripts/gpu/build_bench_pair.py (``target/``, ``pair.json``). The draft is
Automodel's ``LlamaEagle3DraftModel``, configured as ``TrainEagle3Recipe.setup`` configures it, with
``set_vocab_mapping`` for the hot vocabulary and, through ``load_state_dict``, the weights of the
project's repeat construction (automodel_spec.demo.synthetic.eagle3_draft_tensors, which already uses
Automodel's names): every draft token is then accepted at temperature 0. Automodel's ``Checkpointer``
(``save_consolidated=True``, the recipe's setting) writes ``model/`` with its training shard and
``model/consolidated/``; its ``CheckpointLifecycle`` reserves the directory and publishes ``LATEST``;
``save_config`` writes ``config.yaml``. ``RUN_DIR`` is the recipe's ``checkpoint.checkpoint_dir``:

    RUN_DIR/LATEST -> epoch_0_step_<S>/{model/, eagle_meta.pt, config.yaml}

With ``--output-dir-layout`` it is the recipe's ``output_dir`` instead, holding ``checkpoints/`` as with
Automodel's default (and its example yamls): ``RUN_DIR/checkpoints/LATEST -> ...``.

What the recipe would also write and this script does not: ``optim/`` and ``rng/`` (no training here).
``eagle_meta.pt`` holds the dict of ``TrainEagle3Recipe._save_extra_state``, whose module cannot be
imported without Automodel's full dependency set.

Only the draft class and the checkpoint code are imported, without the package ``__init__`` files
that pull in the rest of Automodel (datasets, megatron-fsdp, ...); when ``datasets`` cannot be imported
a placeholder module stands in for it, because ``draft_llama`` imports ``packed_sequence``, which
imports ``datasets`` at module level for code this script never runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import sys
import time
import types
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# Package __init__ files that re-export (and so import) far more than the draft and the checkpointer.
_SKIPPED_INITS = ("nemo_automodel.components.speculative.eagle", "nemo_automodel.components.datasets.llm")
WHEEL_HINT = "pip install --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", required=True, type=Path, help="a pair built by scripts/gpu/build_bench_pair.py")
    ap.add_argument("--out", required=True, type=Path, help="the run directory to write (must not exist)")
    ap.add_argument("--step", type=int, default=1, help="global step in the checkpoint's name")
    ap.add_argument("--device", default=None, help="where to build the draft (default: cuda if available)")
    ap.add_argument("--dtype", default="bfloat16", help="draft dtype (the recipe's on CUDA: bfloat16)")
    ap.add_argument("--output-dir-layout", action="store_true",
                    help="write RUN_DIR/checkpoints/ (the recipe's default) instead of making RUN_DIR the checkpoint dir")
    args = ap.parse_args()
    if args.out.exists():
        print(f"{args.out} exists; give a new --out", file=sys.stderr)
        return 2
    am = import_automodel()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.time()
    spec = json.loads((args.pair / "pair.json").read_text())
    target = args.pair / "target"
    model, selected = build_draft(am, target, spec, device, getattr(torch, args.dtype))
    checkpoint_dir = args.out / "checkpoints" if args.output_dir_layout else args.out
    ckpt = save_run(am, model, selected, target, spec, args.out, checkpoint_dir, args.step)
    verify(ckpt, model)
    print(f"wrote {ckpt} ({time.time() - t0:.1f}s); LATEST is in {checkpoint_dir}")
    return 0


# ---------------------------------------------------------------------------------------------- imports


def import_automodel() -> types.SimpleNamespace:
    """Automodel's draft class and checkpoint code, importable with only the carried wheels.

    Raises:
        SystemExit: nemo_automodel is not importable (the message says how to install the wheels).
    """
    if importlib.util.find_spec("nemo_automodel") is None:
        raise SystemExit(f"nemo_automodel is not importable. From the repository root: {WHEEL_HINT}")
    _ensure_datasets()
    for name in _SKIPPED_INITS:
        _register_bare_package(name)
    from nemo_automodel.components.checkpoint.checkpointing import save_config
    from nemo_automodel.components.checkpoint.config import CheckpointingConfig
    from nemo_automodel.components.distributed.init_utils import initialize_distributed
    from nemo_automodel.components.speculative.eagle.draft_llama import LlamaEagle3DraftModel

    return types.SimpleNamespace(LlamaEagle3DraftModel=LlamaEagle3DraftModel, CheckpointingConfig=CheckpointingConfig,
                                 save_config=save_config, initialize_distributed=initialize_distributed)


def _ensure_datasets() -> None:
    """Import ``datasets``, or put the placeholder in its place when it is absent or half installed (a
    ``--no-deps`` wheel without pyarrow/pandas fails at import)."""
    try:
        import datasets  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "datasets" or m.startswith("datasets.")]:
            del sys.modules[name]
        sys.modules["datasets"] = _placeholder_datasets()


def _placeholder_datasets() -> types.ModuleType:
    """Names ``packed_sequence`` imports from ``datasets``; used there only by data-packing code."""
    mod = types.ModuleType("datasets")
    mod.Dataset = type("Dataset", (), {})
    mod.DatasetDict = type("DatasetDict", (dict,), {})
    mod.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    return mod


def _register_bare_package(name: str) -> None:
    """Make ``name`` importable as a package without running its ``__init__.py``."""
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    importlib.import_module(parent)
    path = [str(Path(p) / child) for p in sys.modules[parent].__path__]
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = path
    module = importlib.util.module_from_spec(spec)
    module.__path__ = path
    sys.modules[name] = module
    setattr(sys.modules[parent], child, module)


# ---------------------------------------------------------------------------------------------- draft


def build_draft(am, target: Path, spec: dict, device: str, dtype):
    """The draft as ``TrainEagle3Recipe.setup`` builds it, holding the repeat construction's weights.

    Returns:
        ``(model, selected_token_ids)``.
    """
    import torch
    from transformers import AutoConfig

    sys.path.insert(0, str(REPO))
    from automodel_spec.demo import synthetic

    base = AutoConfig.from_pretrained(target)
    draft_vocab = int(spec["draft_vocab"])
    # These keys are the ones TrainEagle3Recipe.setup adds to the target's text config.
    draft_config = base.to_dict()
    draft_config.update(draft_vocab_size=draft_vocab, target_hidden_size=base.hidden_size,
                        architectures=["LlamaEagle3DraftModel"], tie_word_embeddings=False,
                        attn_implementation="eager", fc_norm=False, norm_output=False, parallel_drafting=False)
    config = type(base).from_dict(draft_config)
    with torch.device(device):
        model = am.LlamaEagle3DraftModel(config)
    model.to(device=device, dtype=dtype)
    # build_bench_pair's hot vocabulary: the first draft_vocab ids (eagle3_draft_tensors' lm_head rows).
    selected = torch.arange(draft_vocab, dtype=torch.long)
    model.set_vocab_mapping(selected)

    shape = synthetic.LlamaShape(**{f.name: getattr(base, f.name) for f in fields(synthetic.LlamaShape)})
    spread = synthetic.Spread(size=int(spec.get("spread", 1)), gap=float(spec.get("spread_gap", 1.0)))
    tensors = synthetic.eagle3_draft_tensors(shape, draft_vocab, repeat=True, spread=spread, device=device,
                                             dtype=str(dtype).removeprefix("torch."))
    own = model.state_dict()
    for name in ("d2t", "t2d"):  # set_vocab_mapping's buffers; absent when the vocab is not reduced
        theirs = tensors.pop(name)
        if name in own and not torch.equal(own[name].cpu(), theirs.cpu()):
            raise SystemExit(f"set_vocab_mapping gave another {name} than the synthetic construction")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or set(missing) - {"d2t", "t2d"}:
        raise SystemExit(f"names do not match LlamaEagle3DraftModel: missing {missing}, unexpected {unexpected}")
    return model, selected


# ---------------------------------------------------------------------------------------------- save


def save_run(am, model, selected, target: Path, spec: dict, out: Path, checkpoint_dir: Path, step: int,
             recipe_args: dict | None = None) -> Path:
    """Save with Automodel's checkpointer as ``TrainEagle3Recipe.save_checkpoint`` does; return the checkpoint.

    ``recipe_args`` replace those of the example recipe in the saved ``config.yaml`` (a trained run's own).
    """
    import torch

    am.initialize_distributed(backend="nccl")  # world size 1: Automodel makes it a gloo group on a HashStore
    config = am.CheckpointingConfig(
        enabled=True, checkpoint_dir=str(checkpoint_dir), model_save_format="safetensors",
        model_repo_id=str(target), save_consolidated=True, is_peft=False,
        model_state_dict_keys=list(model.state_dict().keys()),
    )
    checkpointer = config.build(dp_rank=0, tp_rank=0, pp_rank=0, moe_mesh=None)
    path = checkpoint_dir / f"epoch_0_step_{step}"
    checkpointer.lifecycle.reserve(str(path))
    checkpointer.save_model(model, str(path), tokenizer=_tokenizer(target), is_final_checkpoint=True)
    mask = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    mask[selected] = True
    torch.save({"global_step": step, "epoch": 0, "selected_token_ids": selected, "selected_token_mask": mask},
               path / "eagle_meta.pt")
    config_yaml = recipe_config(target, spec, out, checkpoint_dir)
    config_yaml["recipe_args"].update(recipe_args or {})
    am.save_config(config_yaml, str(path))
    checkpointer.lifecycle.publish(str(path), best_val_metric=None, metric_key="val_loss")
    checkpointer.close()
    return path


def _tokenizer(target: Path):
    """The target's tokenizer, which the recipe hands to save_model (copied into consolidated/)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(target)
    except (OSError, ValueError) as exc:
        print(f"no tokenizer saved with the draft: {exc}", file=sys.stderr)
        return None


def recipe_config(target: Path, spec: dict, out: Path, checkpoint_dir: Path) -> dict:
    """The recipe yaml a user would have run (Automodel's examples/speculative/eagle3/llama_eagle3_mvp.yaml)."""
    return {
        "recipe": "TrainEagle3Recipe",
        "dist_env": {"backend": "nccl", "timeout_minutes": 30},
        "recipe_args": {"target_model_name_or_path": str(target), "train_data_path": "/path/to/train.jsonl",
                        "output_dir": str(out), "seq_length": 1024, "micro_batch_size": 1, "num_epochs": 1,
                        "ttt_steps": 4, "draft_vocab_size": int(spec["draft_vocab"]), "freeze_embeddings": True},
        "optimizer": {"lr": 1.0e-4, "betas": [0.9, 0.95], "weight_decay": 0.0},
        "checkpoint": {"enabled": True, "checkpoint_dir": str(checkpoint_dir),
                       "model_save_format": "safetensors", "save_consolidated": True},
    }


def verify(ckpt: Path, model) -> None:
    """Every tensor in consolidated/ equals the draft's own (so the construction survived the save)."""
    import torch
    from safetensors import safe_open

    hf = ckpt / "model" / "consolidated"
    index = json.loads((hf / "model.safetensors.index.json").read_text())["weight_map"]
    own = model.state_dict()
    if set(index) != set(own):
        raise SystemExit(f"consolidated names differ from the model's: {sorted(set(index) ^ set(own))}")
    for fname in sorted(set(index.values())):
        with safe_open(str(hf / fname), framework="pt") as fh:
            for name in fh.keys():
                saved = fh.get_tensor(name)  # the checkpointer casts to the target config's dtypes
                if not torch.equal(saved, own[name].cpu().to(saved.dtype)):
                    raise SystemExit(f"{name} in {fname} differs from the draft's tensor")
    print(f"verified {len(index)} tensors in {hf}")


if __name__ == "__main__":
    sys.exit(main())
