#!/usr/bin/env python3
"""Write EAGLE-3 drafts in speculators' format with speculators 0.9.0's own CLI and classes.

Run with the Python of an environment where ``speculators==0.9.0`` is installed (not the project's)::

    /tmp/prod/sp/bin/python scripts/producer_fixtures/speculators_fixtures.py \
        --out tests/fixtures/producers/speculators

Fixtures (all on CPU, from a seeded tiny Llama verifier):

- ``train_dry_run_defaults``: ``speculators train --dry-run`` with the EAGLE-3 defaults
  (norm_before_residual, norm_before_fc, norm_output on; sliding-window attention; default aux ids).
- ``train_dry_run_sglang_compatible``: the same command with the flags that SGLang can reproduce
  (``--no-norm-before-residual --no-norm-before-fc --no-norm-output --full-attention-indices 0``)
  and custom ``--target-layer-ids``.
- ``training_checkpoint``: the checkpoint directory ``speculators train`` writes (``N/`` epoch
  dirs, ``epoch0_end`` and ``checkpoint_best`` links). Its trainer moves the model to CUDA in its
  constructor, so this drives speculators' own pieces on CPU instead: ``TrainConfig.resolve``,
  ``build_draft_model``, ``Trainer.setup_optimizer``, one forward/backward of ``Eagle3DraftModel``
  and ``Trainer.maybe_save_checkpoint`` / ``maybe_update_best`` (``SingleGPUCheckpointer``).
- ``converted_from_eagle3``: ``speculators convert`` of an EAGLE-3 checkpoint in SpecForge's export
  layout (``midlayer.*``); that input is written here and kept under ``inputs/``.

Where the venv's torchvision/torchaudio cannot load (CUDA builds beside a CPU torch), they are hidden
from transformers (``sys.modules[name] = None``); speculators uses neither.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

WORK = Path("/tmp/automodel_spec_fixture_work/speculators")
TARGET_LAYERS = 8
SHAPE = {
    "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": TARGET_LAYERS,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}
DRAFT_VOCAB = 128
CUSTOM_AUX_IDS = [1, 3, 6]  # speculators/vLLM numbering: the INPUT of these target layers is captured
DEFAULT_AUX_IDS = [2, TARGET_LAYERS // 2, TARGET_LAYERS - 3]  # speculators' default, same numbering
SEQ_LEN = 48
# Flags under which SGLang computes what speculators trained (see the manifest's translation notes).
SGLANG_COMPATIBLE = ["--no-norm-before-residual", "--no-norm-before-fc", "--no-norm-output",
                     "--full-attention-indices", "0"]
COMMON = ["--speculator-type", "eagle3", "--verifier-name-or-path", "target", "--data-path", "data",
          "--draft-vocab-size", str(DRAFT_VOCAB), "--mask-token-id", "0", "--seed", "0"]
NONDETERMINISTIC = {"train_command.txt": "speculators writes the wall-clock time ('# Timestamp:') into it"}
_SHIM = ("import sys\n"
         "for m in sys.argv.pop(1).split(','):\n"
         "    if m: sys.modules[m] = None\n"
         "from speculators.__main__ import app\n"
         "sys.argv[0] = 'speculators'\n"
         "app()\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="fixture directory (replaced)")
    args = ap.parse_args()
    out = args.out.resolve()
    hidden = hide_broken_modules()
    _fresh_dir(WORK)
    os.chdir(WORK)  # speculators records the verifier path as given: keep it relative ("target")
    write_target(Path("target"))
    write_token_freq(Path("data"))
    commands = {
        "train_dry_run_defaults": run_cli(hidden, ["train", "--dry-run", *COMMON, "--save-path",
                                                   "train_dry_run_defaults"]),
        "train_dry_run_sglang_compatible": run_cli(hidden, [
            "train", "--dry-run", *COMMON, *SGLANG_COMPATIBLE, "--target-layer-ids",
            *map(str, CUSTOM_AUX_IDS), "--save-path", "train_dry_run_sglang_compatible"]),
    }
    commands["training_checkpoint"] = write_training_checkpoint(Path("training_checkpoint"))
    write_eagle3_input(Path("inputs/eagle3_specforge_layout"))
    commands["converted_from_eagle3"] = run_cli(hidden, [
        "convert", "inputs/eagle3_specforge_layout", "--algorithm", "eagle3", "--verifier", "target",
        "--output-path", "converted_from_eagle3"])
    _fresh_dir(out)
    for name in commands:
        shutil.copytree(name, out / name, symlinks=True)
    shutil.copytree("inputs", out / "inputs")
    shutil.copy2("target/config.json", out / "inputs" / "target_config.json")
    pruned = prune_source_copies(out)
    manifest = build_manifest(out, commands, hidden)
    manifest["pruned_files"] = pruned
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def prune_source_copies(out: Path) -> list[dict]:
    """Drop the copies of speculators' own source (``config.py``, for ``auto_map``) it saves beside a draft.

    They are third-party code, not data: neither SGLang nor this project reads them (no
    ``trust_remote_code``), so the fixtures record them by size and digest instead of holding them.
    """
    pruned = []
    for path in sorted(out.rglob("config.py")):
        pruned.append({"path": str(path.relative_to(out)), "bytes": path.stat().st_size, "sha256": _sha256(path),
                       "why": "speculators' own source, copied for auto_map; not read when serving"})
        path.unlink()
    return pruned


def hide_broken_modules() -> list[str]:
    """Names of optional packages that fail to import here; they are then hidden from transformers."""
    broken = []
    for name in ("torchvision", "torchaudio"):
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True)
        if probe.returncode != 0:
            broken.append(name)
            sys.modules[name] = None  # type: ignore[assignment]  # transformers then treats it as absent
    return broken


def run_cli(hidden: list[str], argv: list[str]) -> str:
    """Run ``speculators ARGV`` (its typer app) in a subprocess; returns the command as a user types it."""
    subprocess.run([sys.executable, "-c", _SHIM, ",".join(hidden), *argv], check=True)
    return "speculators " + " ".join(argv)


def write_target(target_dir: Path) -> None:
    """A seeded tiny Llama verifier (config + safetensors; no tokenizer, so --mask-token-id is given)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE, tie_word_embeddings=False)).to(torch.bfloat16)
    model.save_pretrained(target_dir)


def _token_rows() -> list[dict]:
    """Seeded samples whose ids follow a Zipf law over a permuted vocab (so d2t is not the identity)."""
    import torch

    gen = torch.Generator().manual_seed(1)
    vocab = SHAPE["vocab_size"]
    perm = torch.randperm(vocab, generator=gen)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float32)
    rows = []
    for _ in range(8):
        ids = perm[torch.multinomial(zipf, SEQ_LEN, replacement=True, generator=gen)]
        loss_mask = torch.ones(SEQ_LEN, dtype=torch.long)
        loss_mask[:8] = 0
        rows.append({"input_ids": ids.tolist(), "loss_mask": loss_mask.tolist()})
    return rows


def write_token_freq(data_dir: Path) -> None:
    """``data/token_freq.pt`` by speculators' own counter; ``train`` derives d2t/t2d from it."""
    import datasets
    from speculators.train.vocab_mapping import save_token_frequency_distribution

    dataset = datasets.Dataset.from_list(_token_rows()).with_format("torch")
    save_token_frequency_distribution(dataset, data_dir / "token_freq.pt")


def _training_batch(model) -> dict:
    """One packed batch as speculators' dataloader yields it, from the tiny verifier's hidden states.

    speculators (like vLLM) numbers aux layers by the layer whose INPUT is captured: HF's
    ``hidden_states[i]``. ``shift_batch`` is speculators' own alignment step.
    """
    import torch
    from speculators.models.eagle3.data import shift_batch
    from transformers import LlamaForCausalLM

    verifier = LlamaForCausalLM.from_pretrained("target", dtype=torch.float32).eval()
    row = _token_rows()[0]
    ids = torch.tensor(row["input_ids"])
    with torch.no_grad():
        hidden = verifier(ids.unsqueeze(0), output_hidden_states=True).hidden_states
    sample = shift_batch({
        "input_ids": ids,
        "hidden_states": torch.cat([hidden[i][0] for i in model.target_layer_ids], dim=-1),
        "verifier_last_hidden_states": hidden[-1][0],
        "loss_mask": torch.tensor(row["loss_mask"]),
        "lengths": torch.tensor([SEQ_LEN]),
        "position_ids": torch.arange(SEQ_LEN),
    })
    batch = {k: v.unsqueeze(0) for k, v in sample.items() if k != "lengths"}
    batch["document_ids"] = torch.zeros_like(batch["input_ids"])
    return batch


def write_training_checkpoint(save_path: Path) -> str:
    """What ``speculators train`` saves after epoch 0, made by its own functions on CPU.

    Mirrors ``speculators.train.cli.main`` up to the trainer; ``Trainer.__init__`` is skipped only
    because it moves the model to ``cuda:0``. Returns the equivalent user command.
    """
    import argparse as _argparse

    import torch
    from speculators.model import SpeculatorModel
    from speculators.train.checkpointer import SingleGPUCheckpointer
    from speculators.train.cli import build_draft_model, parse_vocab_mappings, set_seed
    from speculators.train.config import TrainConfig
    from speculators.train.trainer import Trainer, TrainerConfig

    argv = [*COMMON, *SGLANG_COMPATIBLE, "--target-layer-ids", *map(str, CUSTOM_AUX_IDS),
            "--draft-attn-impl", "sdpa", "--loss-implementation", "eager", "--epochs", "1",
            "--lr", "1e-4", "--save-path", str(save_path)]
    cfg = TrainConfig.resolve(argv)
    args = _argparse.Namespace(**cfg.flatten())
    set_seed(args.seed)
    cfg.save(args.save_path)  # run.yaml + train_command.txt, as main() writes them
    d2t, t2d, draft_vocab_size = parse_vocab_mappings(args)
    model_class = SpeculatorModel.registry[args.speculator_type]
    model = build_draft_model(args, model_class, t2d, d2t, draft_vocab_size)
    SpeculatorModel.verify_training_compatible(model)
    train_kwargs, _ = model_class.get_trainer_kwargs(**vars(args))
    batch = _training_batch(model)
    trainer = _cpu_trainer(Trainer, TrainerConfig(
        lr=args.lr, num_epochs=args.epochs, save_path=args.save_path, train_call_kwargs=train_kwargs,
        hidden_states_dtype=getattr(torch, args.hidden_states_dtype)), model, SingleGPUCheckpointer, [batch])
    loss = _train_step(trainer, batch)
    trainer.maybe_save_checkpoint(0, local_step=0)
    trainer.maybe_update_best(0, {"loss_epoch": round(loss, 6)})
    return "speculators train " + " ".join(argv)


def _cpu_trainer(trainer_cls, config, model, checkpointer_cls, loader):
    """A speculators ``Trainer`` without its CUDA-only ``__init__``: the same attributes, then its setup."""
    trainer = trainer_cls.__new__(trainer_cls)
    trainer.model, trainer.config = model, config
    trainer.local_rank, trainer.rank, trainer.is_distributed = 0, 0, False
    trainer.train_loader, trainer.val_loader = loader, None
    trainer.resume_from_checkpoint, trainer.device_type = False, "cpu"
    trainer.checkpointer = checkpointer_cls(config.save_path)
    trainer.setup_trainer()
    trainer.setup_optimizer()
    return trainer


def _train_step(trainer, batch: dict) -> float:
    """One optimizer step, as the trainer's loop body does it (autocast, clip to 1.0, optimizers, schedulers)."""
    import torch

    with torch.autocast("cpu", dtype=trainer.config.hidden_states_dtype):
        _, loss, _ = trainer.model(**batch, **(trainer.config.train_call_kwargs or {}))
    trainer._optimizers_zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
    trainer._optimizers_step()
    trainer._schedulers_step()
    trainer.global_step += 1
    return float(loss.detach())


def write_eagle3_input(in_dir: Path) -> None:
    """An EAGLE-3 draft in SpecForge 0.2.0's ``export --to sglang`` layout: the converter's input.

    Written here (speculators has no writer for it); values are seeded random, d2t/t2d are the ones
    ``train`` derived into ``data/``. Only the converter's output is the producer's.
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(3)
    h, inter = SHAPE["hidden_size"], SHAPE["intermediate_size"]
    q, kv = SHAPE["num_attention_heads"] * SHAPE["head_dim"], SHAPE["num_key_value_heads"] * SHAPE["head_dim"]
    shapes = {
        "fc.weight": (h, 3 * h), "norm.weight": (h,), "lm_head.weight": (DRAFT_VOCAB, h),
        "midlayer.self_attn.q_proj.weight": (q, 2 * h), "midlayer.self_attn.k_proj.weight": (kv, 2 * h),
        "midlayer.self_attn.v_proj.weight": (kv, 2 * h), "midlayer.self_attn.o_proj.weight": (h, q),
        "midlayer.mlp.gate_proj.weight": (inter, h), "midlayer.mlp.up_proj.weight": (inter, h),
        "midlayer.mlp.down_proj.weight": (h, inter), "midlayer.input_layernorm.weight": (h,),
        "midlayer.hidden_norm.weight": (h,), "midlayer.post_attention_layernorm.weight": (h,),
    }
    tensors = {n: (torch.ones(s) if len(s) == 1 else torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16)
               for n, s in shapes.items()}
    tensors["d2t"] = torch.from_numpy(np.load(f"data/d2t-{DRAFT_VOCAB}.npy")).to(torch.int64)
    tensors["t2d"] = torch.from_numpy(np.load(f"data/t2d-{DRAFT_VOCAB}.npy")).to(torch.bool)
    in_dir.mkdir(parents=True)
    save_file(tensors, str(in_dir / "model.safetensors"), metadata={"format": "pt"})
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "vocab_size", "max_position_embeddings", "rms_norm_eps", "bos_token_id", "eos_token_id",
            "pad_token_id")
    config = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_act": "silu",
              **{k: SHAPE[k] for k in keys}, "num_hidden_layers": 1, "draft_vocab_size": DRAFT_VOCAB,
              "dtype": "bfloat16", "rope_parameters": {"rope_theta": SHAPE["rope_theta"], "rope_type": "default"},
              "rope_theta": SHAPE["rope_theta"], "tie_word_embeddings": False, "use_cache": True}
    (in_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# ---- manifest ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> list[dict]:
    rows = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            rows.append({"path": rel, "symlink_to": os.readlink(p)})
        elif p.is_file() and p.name != "manifest.json":
            row = {"path": rel, "bytes": p.stat().st_size, "sha256": _sha256(p), "deterministic": True}
            if p.name in NONDETERMINISTIC:  # no hash: it would make the manifest itself differ per run
                row.update(sha256=None, deterministic=False, why_not=NONDETERMINISTIC[p.name])
            rows.append(row)
    return rows


def _safetensors_facts(path: Path) -> dict:
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    meta = header.pop("__metadata__", None)
    return {"metadata": meta,
            "tensors": {k: {"shape": v["shape"], "dtype": v["dtype"]} for k, v in sorted(header.items())}}


def _versions(hidden: list[str]) -> dict:
    from importlib.metadata import version

    import torch
    import transformers

    return {"python": platform.python_version(), "speculators": version("speculators"),
            "hs-connectors": version("hs-connectors"), "torch": torch.__version__,
            "transformers": transformers.__version__, "safetensors": version("safetensors"),
            "datasets": version("datasets"), "hidden_unloadable_modules": hidden}


def _sglang_translation(cfg: dict) -> dict:
    """What SGLang's LlamaForCausalLMEagle3 needs from this speculators config, and what it cannot honour."""
    layer = cfg["transformer_layer_config"]
    ids = cfg.get("eagle_aux_hidden_state_layer_ids")
    blockers = []
    if cfg.get("norm_before_residual"):
        blockers.append("norm_before_residual=true: the draft's first layer keeps hidden_norm(h) as its "
                        "residual; SGLang (read: 0.5.12, 0.5.14-0.5.17, 0.5.23) always keeps the un-normed h, "
                        "has no switch, "
                        "and the difference is not a weight rescaling (RMSNorm is nonlinear)")
    if ids is not None and (min(ids) < 1 or max(ids) >= TARGET_LAYERS):
        blockers.append(f"aux ids {ids} include the embeddings (0) or the final state ({TARGET_LAYERS}), "
                        "which SGLang's capture cannot produce")
    return {
        "architectures": "LlamaForCausalLMEagle3",
        "from_transformer_layer_config_to_top_level": sorted(k for k in layer if k not in ("model_type",)),
        "num_hidden_layers": layer["num_hidden_layers"],
        "draft_vocab_size": cfg["draft_vocab_size"],
        "vocab_size": layer["vocab_size"],
        "target_hidden_size": cfg.get("target_hidden_size") or layer["hidden_size"],
        "eagle_config.eagle_aux_hidden_state_layer_ids": None if ids is None else [i - 1 for i in ids],
        "aux_id_rule": "speculators/vLLM id i = INPUT of target layer i; SGLang id j = OUTPUT of layer j "
                       "(SGLang captures the input of j+1): j = i - 1. null means vLLM's default "
                       "[2, N//2, N-3] = SGLang's default; omit eagle_config then",
        "norm_before_fc": cfg.get("norm_before_fc", False),
        "norm_before_fc_needs": "SGLang >= 0.5.17 (input_norm); 0.5.12-0.5.16 (read) have no input_norm and "
                                "skip input_norm.weight silently",
        "fc_norm": cfg.get("fc_norm", False),
        "norm_output": cfg.get("norm_output", False),
        "norm_output_semantics": "same in speculators and SGLang: feed norm(h) back to the next step",
        "sliding_window": (layer.get("sliding_window") if "sliding_attention" in (layer.get("layer_types") or [])
                           else None),
        "sliding_window_note": "SGLang's Llama / LlamaForCausalLMEagle3 read no window from the config "
                               "(0.5.17, 0.5.23); only --speculative-draft-window-size sets one",
        "weights": "layers.0.* -> midlayer.* (or kept: SGLang 0.5.12+ reads layers.0.*); "
                   "drop embed_tokens.weight; input_norm.weight kept only with norm_before_fc; "
                   "d2t/t2d as is (same offset convention: target = i + d2t[i])",
        "blockers": blockers,
    }


def _shared_facts(cfg: dict, serve: bool) -> dict:
    """Keys shared with the other producers' manifests (tests/unit/test_producer_fixtures.py reads them)."""
    layer = cfg["transformer_layer_config"]
    ids = cfg.get("eagle_aux_hidden_state_layer_ids")
    facts = {
        "algorithm": "EAGLE-3", "target_layers": TARGET_LAYERS, "target_config": "inputs/target_config.json",
        # what our export must write to eagle_config (SGLang numbering); None: leave it out
        "expected_eagle_aux_hidden_state_layer_ids": None if ids is None else [i - 1 for i in ids],
        "hidden_size": layer["hidden_size"], "vocab_size": layer["vocab_size"],
        "draft_vocab_size": cfg["draft_vocab_size"], "layers_in_weights": layer["num_hidden_layers"],
        "target_hidden_size": cfg.get("target_hidden_size"),
        "aux_layer_ids_recorded": "config.json eagle_aux_hidden_state_layer_ids (top level, speculators/vLLM "
                                  "numbering: the input of target layer i)",
    }
    if not serve:
        facts["refusal_must_mention"] = "norm_before_residual"
    return facts


def _fixture(out: Path, name: str, command: str, *, producer: dict, calls: list[str], serve: bool, why: str,
             hf_dir: str = ".", note: str | None = None) -> dict:
    """One fixture's entry; paths in it (hf_dir, files, nondeterministic_files) are relative to ``path``."""
    model_dir = out / name / hf_dir
    cfg = json.loads((model_dir / "config.json").read_text())
    unstable = sorted(str(p.relative_to(out / name)) for p in (out / name).rglob("*") if p.name in NONDETERMINISTIC)
    return {
        "name": f"speculators_{name}", "path": name, "hf_dir": hf_dir, "command": command,
        "producer": producer, "producer_code": calls, "action": "serve" if serve else "refuse", "why": why,
        "deterministic": not unstable, "nondeterministic_files": unstable,
        **({"how_run": note} if note else {}),
        "facts": {**_shared_facts(cfg, serve), "config": cfg,
                  "weights": _safetensors_facts(model_dir / "model.safetensors"),
                  "sglang_translation": _sglang_translation(cfg)},
        "files": _files(out / name),
    }


def build_manifest(out: Path, commands: dict, hidden: list[str]) -> dict:
    """Machine-readable description of every fixture, for the tests."""
    env = _versions(hidden)
    producer = {"package": "speculators", "version": env["speculators"]}
    dry = ["speculators.__main__:app (train --dry-run)", "speculators.train.config.TrainConfig.resolve",
           "speculators.train.cli.main", "speculators.models.eagle3.Eagle3DraftModel.from_training_args",
           "Eagle3DraftModel.save_pretrained"]
    fixtures = [
        _fixture(out, "train_dry_run_defaults", commands["train_dry_run_defaults"], producer=producer,
                 calls=dry, serve=False,
                 why="norm_before_residual=true (speculators train's default) has no SGLang equivalent; "
                     "also norm_before_fc needs SGLang >= 0.5.17 and the 2048-token sliding window is "
                     "not read by SGLang"),
        _fixture(out, "train_dry_run_sglang_compatible", commands["train_dry_run_sglang_compatible"],
                 producer=producer, calls=dry, serve=True,
                 why="flags SGLang reproduces; translate config and names, and aux ids [1, 3, 6] -> "
                     "eagle_config [0, 2, 5]"),
        _fixture(out, "training_checkpoint", commands["training_checkpoint"], hf_dir="0",
                 producer=producer,
                 calls=["speculators.train.config.TrainConfig.resolve/save", "speculators.train.cli."
                        "parse_vocab_mappings/build_draft_model/set_seed", "Eagle3DraftModel.forward "
                        "(one CPU step)", "speculators.train.trainer.Trainer.setup_trainer/setup_optimizer/"
                        "maybe_save_checkpoint/maybe_update_best", "speculators.train.checkpointer."
                        "SingleGPUCheckpointer.save_checkpoint/save_scheduler_state_dict"],
                 serve=True,
                 note="not through the CLI: speculators' Trainer.__init__ moves the model to cuda:0, so "
                      "the script calls the same functions main() calls (TrainConfig.resolve, "
                      "parse_vocab_mappings, build_draft_model), builds the Trainer without __init__ and "
                      "runs its setup_trainer/setup_optimizer, one CPU step of the loop body, "
                      "maybe_save_checkpoint(0) and maybe_update_best(0); the command is what a GPU user runs",
                 why="training_checkpoint/0 (also reached through checkpoint_best and epoch0_end) is a "
                     "speculators draft like train_dry_run_sglang_compatible, plus optimizer, scheduler "
                     "and training_state.json beside it; serve the epoch that checkpoint_best points to"),
        _fixture(out, "converted_from_eagle3", commands["converted_from_eagle3"],
                 producer=producer,
                 calls=["speculators.__main__:app (convert)", "speculators.convert.convert_model",
                        "speculators.convert.eagle.eagle3_converter.Eagle3Converter",
                        "speculators.convert.eagle.eagle3_legacy_model.Eagle3Speculator.save_pretrained"],
                 serve=True,
                 why="converter defaults: every norm flag false, aux ids null (vLLM/SGLang default), no "
                     "embed_tokens; weights float32 because the converter reads only torch_dtype and a "
                     "transformers-5 input has dtype"),
    ]
    return {
        "producer": "speculators",
        "environment": env,
        "generator": "scripts/producer_fixtures/speculators_fixtures.py --out DIR (run with the speculators venv)",
        "work_dir": str(WORK),
        "verifier_recorded_as": "target (relative path given on the command line; its config is "
                                "inputs/target_config.json, its weights are not kept)",
        "target": {"num_hidden_layers": TARGET_LAYERS, "hidden_size": SHAPE["hidden_size"],
                   "vocab_size": SHAPE["vocab_size"]},
        "aux_ids_speculators_default": DEFAULT_AUX_IDS,
        "determinism": {"deterministic_except": NONDETERMINISTIC,
                        "how": "seeded weights and data; checked by running twice and comparing sha256"},
        "inputs": {"path": "inputs", "files": _files(out / "inputs"), "what": [
            "eagle3_specforge_layout/ (converter input, written by this script in SpecForge's export layout)",
            "target_config.json (the tiny verifier's config.json)"]},
        "fixtures": fixtures,
    }


if __name__ == "__main__":
    sys.exit(main())
