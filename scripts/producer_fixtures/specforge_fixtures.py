#!/usr/bin/env python3
"""Write EAGLE-3 fixtures with SpecForge 0.2.0's own code: a training run and its ``specforge export``.

Run with the Python of an environment where ``specforge==0.2.0`` is installed (not the project's)::

    /tmp/prod/sf/bin/python scripts/producer_fixtures/specforge_fixtures.py \
        --out tests/fixtures/producers/specforge

What runs, all on CPU (SpecForge's own switches, no copy of its code):

1. A tiny Llama target (transformers ``LlamaForCausalLM``, saved sharded because SpecForge's
   ``TargetHead`` requires ``*.index.json``) and offline hidden-state features in the layout of
   SpecForge's ``scripts/prepare_hidden_states.py`` (``rows_0-5000/data_{i}.ckpt``: input_ids,
   loss_mask, hidden_state, aux_hidden_state). That script needs SGLang on a GPU, so the features
   come from the HF target here; they are training data, not the format under test.
2. ``specforge train --config run.yaml``: offline EAGLE-3 training, which builds the vocab map,
   trains ``LlamaForCausalLMEagle3`` and saves checkpoints through ``CheckpointManager``.
   Two settings differ from a GPU run, because the GPU path cannot run here:
   ``training.fsdp_sharding: NO_SHARD`` (FSDP needs an accelerator; NO_SHARD is SpecForge's DDP
   path, which stores the optimizer in ``training_state.pt`` as ``replicated_optimizer_state``
   instead of in ``training_state_rank0.pt``) and ``TRITON_INTERPRET=1`` (SpecForge's loss is a
   Triton kernel; Triton's interpreter runs it on CPU).
3. ``specforge export --to sglang`` and ``specforge export --to hf`` on the last checkpoint.

Paths are fixed (``WORK``) and input mtimes are pinned, because SpecForge records the target's and
draft config's paths, sizes and mtimes in ``training_state.pt``; with them fixed the outputs are
byte-identical from run to run.
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

PRODUCER = "specforge"
WORK = Path("/tmp/automodel_spec_fixture_work/specforge")
PINNED_MTIME = 1_700_000_000  # SpecForge fingerprints target shards by (size, mtime)
RUN_ID = "tiny-eagle3"
MAX_STEPS = 4
SAVE_INTERVAL = 2
TARGET_LAYERS = 8
# SGLang's / SpecForge's default capture for 8 target layers, in SGLang's numbering (layer outputs):
# [1, N//2 - 1, N - 4]; prepare_hidden_states.py uses the same default.
AUX_LAYER_IDS = [1, TARGET_LAYERS // 2 - 1, TARGET_LAYERS - 4]
SHAPE = {
    "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": TARGET_LAYERS,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}
DRAFT_VOCAB = 128
NUM_SAMPLES = 8
SEQ_LEN = 48


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="fixture directory (replaced)")
    args = ap.parse_args()
    out = args.out.resolve()
    _fresh_dir(WORK)
    write_target(WORK / "target")
    write_features(WORK / "target", WORK / "features")
    (WORK / "draft_config.json").write_text(json.dumps(draft_config(), indent=2) + "\n")
    (WORK / "run.yaml").write_text(run_yaml())
    _pin_mtimes(WORK)
    commands = run_producer(WORK)
    _fresh_dir(out)
    copy_outputs(WORK, out)
    manifest = build_manifest(out, commands)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _pin_mtimes(root: Path) -> None:
    """Give every input file one mtime: SpecForge writes (size, mtime) of target shards into its state."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            os.utime(p, (PINNED_MTIME, PINNED_MTIME))


def write_target(target_dir: Path) -> None:
    """A seeded tiny Llama, sharded so that ``model.safetensors.index.json`` exists (TargetHead needs it)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPE, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target_dir, max_shard_size="300KB")


def write_features(target_dir: Path, features_dir: Path) -> None:
    """Offline EAGLE-3 features as SpecForge's prepare_hidden_states.py lays them out.

    ``aux_hidden_state`` concatenates the outputs of the layers in ``AUX_LAYER_IDS`` (HF
    ``hidden_states[i + 1]``); ``hidden_state`` is the final, normed hidden state, as SGLang's
    logits processor receives it. Token ids follow a Zipf law over a seeded permutation of the
    vocabulary, so the frequency-based vocab map (d2t) is not the identity.
    """
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(target_dir, dtype=torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(1)
    vocab = SHAPE["vocab_size"]
    perm = torch.randperm(vocab, generator=gen)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float32)
    rows = features_dir / "rows_0-5000"
    rows.mkdir(parents=True)
    for i in range(NUM_SAMPLES):
        ids = perm[torch.multinomial(zipf, SEQ_LEN, replacement=True, generator=gen)].unsqueeze(0)
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states
        loss_mask = torch.ones(SEQ_LEN, dtype=torch.long)
        loss_mask[:8] = 0  # a "prompt" the draft is not trained on
        sample = {
            "input_ids": ids.view(-1),
            "loss_mask": loss_mask,
            "hidden_state": hidden[-1].clone(),
            "aux_hidden_state": torch.cat([hidden[i + 1] for i in AUX_LAYER_IDS], dim=-1).clone(),
        }
        torch.save(sample, rows / f"data_{i}.ckpt")


def draft_config() -> dict:
    """The draft config a SpecForge user writes (cf. its configs/llama3-8B-eagle3.json), at tiny size."""
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "bos_token_id",
            "eos_token_id", "pad_token_id")
    return {
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_act": "silu",
        "initializer_range": 0.02, **{k: SHAPE[k] for k in keys}, "num_hidden_layers": 1,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
        "draft_vocab_size": DRAFT_VOCAB,
    }


def run_yaml() -> str:
    """``specforge train`` config: offline, CPU-able (see the module docstring for the two CPU settings)."""
    return "\n".join([
        f"run_id: {RUN_ID}",
        "output_dir: outputs",
        "model:",
        "  target_model_path: target",
        "  draft_model_config: draft_config.json",
        "data:",
        "  hidden_states_path: features",
        "  max_length: 64",
        "  cache_dir: cache",
        "  dataloader_num_workers: 0",
        "training:",
        "  strategy: eagle3",
        "  num_epochs: 1",
        f"  max_steps: {MAX_STEPS}",
        "  batch_size: 1",
        "  learning_rate: 0.0001",
        "  ttt_length: 3",
        "  attention_backend: sdpa",
        f"  save_interval: {SAVE_INTERVAL}",
        "  log_interval: 1",
        "  seed: 0",
        "  fsdp_sharding: NO_SHARD",
        "",
    ])


def _specforge_cli() -> list[str]:
    exe = Path(sys.executable).with_name("specforge")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "specforge.cli"]


def run_producer(work: Path) -> dict:
    """Run SpecForge's CLI as a user would; returns the commands, as typed, by fixture name."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "SPECFORGE_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    last = f"outputs/{RUN_ID}-step{MAX_STEPS}"
    commands = {
        "training_run": ["train", "--config", "run.yaml"],
        "sglang_export": ["export", "--to", "sglang", "--checkpoint", last, "--draft-config",
                          "draft_config.json", "--output-dir", "sglang_export"],
        "hf_export": ["export", "--to", "hf", "--checkpoint", last, "--draft-config", "draft_config.json",
                      "--output-dir", "hf_export", "--embedding-source", "target"],
    }
    for argv in commands.values():
        subprocess.run(_specforge_cli() + argv, cwd=work, env=env, check=True)
    return {name: "specforge " + " ".join(argv) for name, argv in commands.items()}


def copy_outputs(work: Path, out: Path) -> None:
    """Copy what SpecForge wrote (symlinks kept) and the inputs a user gave it."""
    shutil.copytree(work / "outputs", out / "training_run", symlinks=True)
    shutil.copytree(work / "sglang_export", out / "sglang_export")
    shutil.copytree(work / "hf_export", out / "hf_export")
    inputs = out / "inputs"
    inputs.mkdir()
    shutil.copy2(work / "draft_config.json", inputs / "draft_config.json")
    shutil.copy2(work / "run.yaml", inputs / "run.yaml")
    shutil.copy2(work / "target" / "config.json", inputs / "target_config.json")


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
            rows.append({"path": rel, "bytes": p.stat().st_size, "sha256": _sha256(p)})
    return rows


def _safetensors_facts(path: Path) -> dict:
    """Tensor names, shapes and dtypes read from the file's own header."""
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_len])
    meta = header.pop("__metadata__", None)
    return {"metadata": meta,
            "tensors": {k: {"shape": v["shape"], "dtype": v["dtype"]} for k, v in sorted(header.items())}}


def _state_dict_facts(state: dict) -> dict:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in sorted(state.items())}


def _checkpoint_facts(step_dir: Path) -> dict:
    """What ``training_state.pt`` holds (weights-only loadable; optimizer kept, ~1 MB here)."""
    import torch

    state = torch.load(step_dir / "training_state.pt", map_location="cpu", weights_only=True)
    rank = torch.load(step_dir / "training_state_rank0.pt", map_location="cpu", weights_only=True)
    return {
        "top_level_keys": sorted(state),
        "draft_state_dict": _state_dict_facts(state["draft_state_dict"]),
        "global_step": state["global_step"], "epoch": state["epoch"], "strategy": state["strategy"],
        "run_id": state["run_id"], "world_size": state["world_size"],
        "eagle3_draft_num_hidden_layers": state["eagle3_draft_num_hidden_layers"],
        "model_provenance_capture_layers": dict(state["specforge_model_provenance"])["capture_layers"],
        "optimizer_location": "training_state.pt['replicated_optimizer_state'] (DDP / NO_SHARD); with "
                              "FSDP (the GPU default) it is training_state_rank{r}.pt['optimizer']",
        "rank_file_keys": sorted(rank),
        "weights_only_loadable": True,
    }


def _versions() -> dict:
    from importlib.metadata import version

    import torch
    import transformers

    return {"python": platform.python_version(), "specforge": version("specforge"), "torch": torch.__version__,
            "transformers": transformers.__version__, "triton": version("triton"),
            "safetensors": version("safetensors"), "sglang (installed with specforge)": version("sglang")}


def _draft_d2t_facts(export_dir: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    t = load_file(export_dir / "model.safetensors")
    d2t, t2d = t["d2t"], t["t2d"]
    target_ids = (d2t + torch.arange(d2t.numel())).tolist()
    return {"d2t_nonzero": int((d2t != 0).sum()), "t2d_true": int(t2d.sum()),
            "hot_target_ids_first8": target_ids[:8], "t2d_matches_d2t": sorted(target_ids) ==
            [i for i, v in enumerate(t2d.tolist()) if v]}


def build_manifest(out: Path, commands: dict) -> dict:
    """Machine-readable description of every fixture, for the tests."""
    env = _versions()
    producer = {"package": PRODUCER, "version": env[PRODUCER]}
    step_dirs = sorted((out / "training_run").glob(f"{RUN_ID}-step*"))
    sglang_cfg = json.loads((out / "sglang_export" / "config.json").read_text())
    hf_cfg = json.loads((out / "hf_export" / "config.json").read_text())
    common_facts = {
        # keys shared with the other producers' manifests (tests/unit/test_producer_fixtures.py reads them)
        "algorithm": "EAGLE-3", "target_layers": TARGET_LAYERS, "target_config": "inputs/target_config.json",
        "expected_eagle_aux_hidden_state_layer_ids": None,  # none recorded; the default capture is right
        "hidden_size": SHAPE["hidden_size"], "vocab_size": SHAPE["vocab_size"], "draft_vocab_size": DRAFT_VOCAB,
        "target_hidden_size": None, "target_num_hidden_layers": TARGET_LAYERS, "layers_in_weights": 1,
        "aux_layer_ids_used_in_training_sglang_numbering": AUX_LAYER_IDS,
        "aux_layer_ids_recorded": "nowhere: SpecForge fixes them when it captures features "
                                  "(prepare_hidden_states.py --aux-hidden-states-layers, or "
                                  "model.aux_hidden_state_layer_ids online) and writes them neither to "
                                  "the checkpoint's draft config nor to the export; these equal SGLang's "
                                  "default capture, so serving without ids is right for this fixture",
    }
    return {
        "producer": PRODUCER,
        "environment": env,
        "generator": "scripts/producer_fixtures/specforge_fixtures.py --out DIR (run with the specforge venv)",
        "work_dir_recorded_in_outputs": str(WORK),
        "determinism": {
            "deterministic": True,
            "how": "seeded weights and data, fixed work dir and pinned input mtimes (SpecForge stores "
                   "absolute paths, sizes and mtimes of the target and draft config in "
                   "training_state.pt['specforge_model_provenance']); CPU training with the same "
                   "thread count. Checked by running twice and comparing sha256 of every file.",
        },
        "cpu_deviations_from_a_gpu_run": [
            "training.fsdp_sharding=NO_SHARD (FSDP refuses CPU): optimizer saved once in "
            "training_state.pt['replicated_optimizer_state'], training_state_rank0.pt holds only RNG",
            "TRITON_INTERPRET=1: SpecForge's LogSoftmaxLoss is a Triton kernel, run by Triton's interpreter",
            "features written from the HF target (prepare_hidden_states.py needs SGLang on a GPU)",
        ],
        "inputs": {"path": "inputs", "files": _files(out / "inputs"),
                   "what": ["draft_config.json (the --draft-config given to train and export)",
                            "run.yaml (specforge train --config)",
                            "target_config.json (the tiny target's config.json; its weights are not kept)"]},
        "fixtures": [
            {
                "name": "specforge_training_run",
                "path": "training_run",
                "producer": producer,
                "producer_code": ["specforge.cli:main (train)",
                                  "specforge.training.checkpoint.CheckpointManager.save",
                                  "specforge.training.controller.TrainerController.save_checkpoint",
                                  "specforge.modeling.draft.llama3_eagle.LlamaForCausalLMEagle3"],
                "command": commands["training_run"],
                "layout": f"{RUN_ID}-step{{N}}/training_state.pt + training_state_rank0.pt; "
                          f"{RUN_ID}-latest -> {RUN_ID}-step{MAX_STEPS}; no config.json, no safetensors",
                "checkpoints": [p.name for p in step_dirs],
                "latest_symlink": f"{RUN_ID}-latest",
                "hf_dir": None,
                "deterministic": True, "nondeterministic_files": [],
                "files": _files(out / "training_run"),
                "action": "refuse",
                "why": "as given, without its config: no config.json and no safetensors: the weights are "
                       "inside a torch pickle (training_state.pt['draft_state_dict']) and the architecture "
                       "lives in the separate --draft-config file, whose path the checkpoint records (a "
                       "path of the machine it was trained on). Refused naming draft.config and `specforge "
                       "export --to sglang`; served as trained when draft.config names inputs/draft_config.json",
                "facts": {**common_facts,
                          "refusal_must_mention": "specforge export",
                          "checkpoint": {p.name: _checkpoint_facts(p) for p in step_dirs},
                          "names_vs_sglang_export": "identical (midlayer.*, fc, norm, lm_head, d2t, t2d); "
                                                    "embed_tokens excluded because it is frozen"},
            },
            {
                "name": "specforge_sglang_export",
                "path": "sglang_export",
                "producer": producer,
                "producer_code": ["specforge.cli:main (export --to sglang)",
                                   "specforge.export.to_sglang.export_to_sglang",
                                   "LlamaForCausalLMEagle3.save_pretrained",
                                   "specforge.export.checkpoint_io.apply_legacy_rope_scaling"],
                "command": commands["sglang_export"],
                "hf_dir": ".",
                "deterministic": True, "nondeterministic_files": [],
                "files": _files(out / "sglang_export"),
                "action": "serve",
                "why": "LlamaForCausalLMEagle3 with SGLang's own names, num_hidden_layers=1, d2t/t2d, "
                       "no embed_tokens (SGLang takes the target's); no aux ids recorded and training "
                       "used SGLang's default capture",
                "facts": {**common_facts, "config": sglang_cfg,
                          "weights": _safetensors_facts(out / "sglang_export" / "model.safetensors"),
                          "vocab_map": _draft_d2t_facts(out / "sglang_export"),
                          "rope_keys": ["rope_parameters", "rope_theta (mirrored by apply_legacy_rope_scaling)"],
                          "norm_output": "absent: SpecForge's model defaults it to True, meaning logits "
                                         "from norm(h) with the pre-norm h fed back, which is what SGLang "
                                         "does when norm_output is absent/false. An explicit norm_output in "
                                         "a SpecForge config means something else in SGLang (true: SGLang "
                                         "feeds the normed h back; false: SpecForge drops the final norm "
                                         "before lm_head)",
                          "file_mode_model_safetensors": "0600 (as transformers wrote it)"},
            },
            {
                "name": "specforge_hf_export",
                "path": "hf_export",
                "producer": producer,
                "producer_code": ["specforge.cli:main (export --to hf)", "specforge.export.to_hf.export_to_hf"],
                "command": commands["hf_export"],
                "hf_dir": ".",
                "deterministic": True, "nondeterministic_files": [],
                "files": _files(out / "hf_export"),
                "action": "serve",
                "why": "same as the sglang export plus embed_tokens.weight (copied from the target), "
                       "which the exporter must drop or SGLang ignores",
                "facts": {**common_facts, "config": hf_cfg,
                          "weights": _safetensors_facts(out / "hf_export" / "model.safetensors")},
            },
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
