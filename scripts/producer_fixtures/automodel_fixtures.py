#!/usr/bin/env python3
"""Build test fixtures with NeMo Automodel's own EAGLE training recipes (run with the producer's Python).

    /tmp/prod/am/bin/python scripts/producer_fixtures/automodel_fixtures.py --out tests/fixtures/producers/automodel

Each fixture is the output directory of a real, tiny training run: Automodel's ``TrainEagle3Recipe`` /
``TrainEagle1Recipe`` / ``TrainEagle2Recipe`` ``main()`` runs on CPU (world size 1, which Automodel's
``initialize_distributed`` turns into a gloo group) over a tiny Llama target and six chat samples, and
its own checkpointer writes ``checkpoints/epoch_E_step_S/{model/, eagle_meta.pt, config.yaml, rng/}``
and ``checkpoints/LATEST``. Nothing of the on-disk format is written here; this script only prepares the
inputs, trims what is too large to commit and describes the result in ``manifest.json``.

Three things in Automodel 0.7.0 cannot run on a CPU-only machine and are worked around, as the manifest
records: ``NeMoAutoModelForCausalLM.from_pretrained`` calls ``torch.cuda.current_device()`` on every
path, so the frozen *target* is loaded with transformers' ``AutoModelForCausalLM`` instead (the draft,
its training and its saving are Automodel's); ``components/_peft/lora_kernel.py`` fails at import with
triton 3.9 (an autotune key that is not a kernel argument), so triton is hidden, which Automodel handles
as "triton not installed"; and the P-EAGLE trainer's flex_attention has no backward on CPU, so that
fixture is the recipe's ``setup()`` followed by its own ``save_checkpoint`` (untrained weights).

``optim/`` (twice the weights; its DCP ``.metadata`` differs run to run) and most training shards in
``model/`` are removed after the run; the manifest lists them with their sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

PRODUCER = "nemo-automodel"
TARGET_DIR = "tiny-llama-target"
DATA_FILE = "data/train.jsonl"
SEED = 1234
MASK_TOKEN_ID = 511  # P-EAGLE's reserved id: above every id the tiny tokenizer emits
# Sharded like a real target: the consolidated draft export reuses the target's shard layout for its keys.
TARGET_SHARD_SIZE = "200KB"
# The tiny target: Llama-3 layout at hidden 64. 8 layers, so Automodel's default aux layers [1, 3, 4] differ.
TARGET_SHAPE = {
    "vocab_size": 512, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 8,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
}
SPECIAL_TOKENS = ["<|pad|>", "<|begin_of_text|>", "<|end_of_text|>", "<|unk|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
NUM_WORDS = 480
# Assistant turns are wrapped in {% generation %} so the recipe's loss mask covers exactly those tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|> {{ m['role'] }} <|end_header_id|> "
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }} <|eot_id|>{% endgeneration %}"
    "{% else %}{{ m['content'] }} <|eot_id|>{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|> assistant <|end_header_id|> {% endif %}"
)
# Interesting config keys whose absence a test may assert.
CONFIG_KEYS = ("architectures", "model_type", "num_hidden_layers", "draft_num_hidden_layers", "draft_vocab_size",
               "vocab_size", "hidden_size", "target_hidden_size", "num_aux_hidden_states", "dtype", "torch_dtype",
               "rope_parameters", "rope_theta", "eagle_config", "fc_norm", "norm_output", "parallel_drafting",
               "mask_token_id", "num_depths", "tie_word_embeddings", "fc_bias", "bias", "attention_bias")

# Mirrors Automodel's examples/speculative/eagle3/llama_eagle3_mvp.yaml, at the tiny shape.
EAGLE3_ARGS = {
    "val_data_path": None, "train_split": None, "val_split": None, "seq_length": 128, "micro_batch_size": 1,
    "grad_accumulation_steps": 1, "num_workers": 0, "num_epochs": 1, "ttt_steps": 2, "draft_vocab_size": 128,
    "freeze_embeddings": True, "trust_remote_code": False, "shuffle_seed": 42, "log_every_steps": 10,
    "max_grad_norm": 1.0,
}
# Mirrors examples/speculative/eagle1/llama_eagle1_perfectblend.yaml (eagle2/ is the same with the other recipe).
EAGLE1_ARGS = {
    "val_data_path": None, "train_split": None, "val_split": None, "seq_length": 128, "micro_batch_size": 1,
    "grad_accumulation_steps": 1, "num_workers": 0, "num_epochs": 1, "draft_num_hidden_layers": 1,
    "hidden_loss_weight": 1.0, "token_loss_weight": 0.1, "freeze_embeddings": True, "trust_remote_code": False,
    "shuffle_seed": 42, "log_every_steps": 10, "max_grad_norm": 1.0,
}


@dataclass(frozen=True)
class Fixture:
    """One training run and what the project should do with its output.

    Attributes:
        name: the fixture directory, also the recipe's ``output_dir`` name.
        recipe: Automodel recipe class name (``recipe:`` in the yaml).
        module: the module whose ``main()`` runs the recipe.
        recipe_args: ``recipe_args`` of the yaml, minus the paths filled in here.
        checkpoint_section: whether the yaml has a ``checkpoint:`` block (the P-EAGLE example has none).
        keep_training_shards: keep ``model/shard-*.safetensors`` of the LATEST checkpoint (size budget).
        classes: the draft class the recipe builds, for the manifest.
        facts: extra facts for tests (merged over the defaults in ``describe``).
        train: run the training loop; without it the recipe's ``setup()`` is followed by its own
            ``save_checkpoint`` (P-EAGLE: FlexAttention has no backward on CPU).
        action: ``serve`` or ``refuse``.
        why: the reason, for the manifest.
    """

    name: str
    recipe: str
    module: str
    recipe_args: dict
    action: str
    why: str
    checkpoint_section: bool = True
    keep_training_shards: bool = False
    classes: tuple[str, ...] = field(default=())
    train: bool = True
    facts: dict = field(default_factory=dict)


_E3 = "nemo_automodel.recipes.llm.train_eagle3"
_E1 = "nemo_automodel.recipes.llm.train_eagle1"
_E2 = "nemo_automodel.recipes.llm.train_eagle2"
_DRAFT3 = "nemo_automodel.components.speculative.eagle.draft_llama.LlamaEagle3DraftModel"
_DRAFT1 = "nemo_automodel.components.speculative.eagle.draft_llama_v12.LlamaEagleDraftModel"
_SGLANG_E3 = ("SGLang's LlamaForCausalLMEagle3 loads it once architectures is renamed, num_hidden_layers is "
              "set to the 1 layer in the weights")

FIXTURES = (
    Fixture("eagle3_run_reduced", "TrainEagle3Recipe", _E3, {**EAGLE3_ARGS, "ckpt_every_steps": 3},
            "serve", f"{_SGLANG_E3}, and d2t (in the weights) maps the 128-token draft vocab",
            keep_training_shards=True, classes=(_DRAFT3,)),
    Fixture("eagle3_run_full", "TrainEagle3Recipe", _E3, {**EAGLE3_ARGS, "draft_vocab_size": None},
            "serve", f"{_SGLANG_E3}; full vocab, so no d2t/t2d", classes=(_DRAFT3,)),
    Fixture("eagle3_1_run", "TrainEagle3Recipe", _E3, {**EAGLE3_ARGS, "fc_norm": True, "norm_output": True},
            "serve", f"{_SGLANG_E3}; EAGLE-3.1 fc_norm.{{0,1,2}} and norm_output need SGLang >= 0.5.12",
            classes=(_DRAFT3,)),
    Fixture("eagle3_run_aux_ids", "TrainEagle3Recipe", _E3, {**EAGLE3_ARGS, "aux_layer_ids": [0, 2, 5]},
            "serve", "only with eagle_config.eagle_aux_hidden_state_layer_ids [0, 2, 5] written: "
            "recipe_args.aux_layer_ids is in config.yaml but not in config.json, and served without it SGLang "
            "captures its default layers, so the draft reads the wrong hidden states",
            classes=(_DRAFT3,), facts={"aux_layer_ids": [0, 2, 5], "aux_layer_ids_source": "config.yaml "
                                       "recipe_args.aux_layer_ids (not written to config.json)",
                                       "expected_eagle_aux_hidden_state_layer_ids": [0, 2, 5]}),
    Fixture("peagle_run", "TrainEagle3Recipe", _E3,
            {**{k: v for k, v in EAGLE3_ARGS.items() if k != "ttt_steps"}, "freeze_embeddings": False,
             "parallel_drafting": True, "num_depths": 4, "num_draft_layers": 2, "down_sample_ratio": 0.7,
             "down_sample_ratio_min": 0.2, "mask_token_id": MASK_TOKEN_ID, "sequence_partitions": 1},
            "refuse", "P-EAGLE (parallel_drafting: true, mask_hidden): SGLang has no parallel-drafting EAGLE "
            "head; its EAGLE3 loader would skip mask_hidden and layers.1 and serve a different model",
            checkpoint_section=False, classes=(_DRAFT3,), train=False),
    Fixture("eagle1_run", "TrainEagle1Recipe", _E1, dict(EAGLE1_ARGS),
            "refuse", "LlamaEagleDraftModel trains layers.0.input_layernorm and a final norm; SGLang's "
            "LlamaForCausalLMEagle has neither, so the trained draft cannot be served as trained",
            classes=(_DRAFT1,)),
    Fixture("eagle2_run", "TrainEagle2Recipe", _E2, dict(EAGLE1_ARGS),
            "refuse", "same draft and objective as EAGLE-1 (TrainEagle2Recipe subclasses TrainEagle1Recipe)",
            classes=(_DRAFT1,)),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="directory to fill with one directory per fixture + manifest.json")
    ap.add_argument("--only", action="append", choices=[f.name for f in FIXTURES], help="build only these")
    ap.add_argument("--work", type=Path, help="keep the workspace (target, data, raw runs) here")
    ap.add_argument("--run-recipe", help=argparse.SUPPRESS)  # internal: one recipe run in a fresh process
    args = ap.parse_args()
    if args.run_recipe:
        return _run_recipe(_fixture(args.run_recipe), args.work)
    if args.out is None:
        ap.error("--out is required")
    fixtures = [f for f in FIXTURES if not args.only or f.name in args.only]
    with tempfile.TemporaryDirectory(prefix="am-fixtures-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        build_inputs(work)
        args.out.mkdir(parents=True, exist_ok=True)
        entries = []
        for fx in fixtures:
            print(f"[automodel] {fx.name}: running {fx.recipe}", flush=True)
            entries.append(build_fixture(fx, work, args.out.resolve()))
    manifest = {"producer": PRODUCER, "generator": "scripts/producer_fixtures/automodel_fixtures.py",
                "environment": environment(), "inputs": inputs_description(), "fixtures": entries}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"[automodel] wrote {len(entries)} fixtures and manifest.json to {args.out}")
    return 0


def _fixture(name: str) -> Fixture:
    return next(f for f in FIXTURES if f.name == name)


# ---------------------------------------------------------------------------------------------- inputs


def build_inputs(work: Path) -> None:
    """Write the tiny target (weights + tokenizer with a chat template) and the chat data into ``work``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    cfg = LlamaConfig(**TARGET_SHAPE, bos_token_id=1, eos_token_id=6, pad_token_id=0, tie_word_embeddings=False)
    cfg.architectures = ["LlamaForCausalLM"]
    LlamaForCausalLM(cfg).save_pretrained(work / TARGET_DIR, max_shard_size=TARGET_SHARD_SIZE)
    build_tokenizer().save_pretrained(work / TARGET_DIR)
    data = work / DATA_FILE
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(row) + "\n" for row in chat_rows()))


def build_tokenizer():
    """A word-level fast tokenizer (specials + ``system/user/assistant`` + ``w0..w479``), ids < 490."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["system", "user", "assistant"] + [f"w{i}" for i in range(NUM_WORDS)]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|pad|>", unk_token="<|unk|>", chat_template=CHAT_TEMPLATE)


def chat_rows(n: int = 6) -> list[dict]:
    """Six chats; the assistant's words follow a skewed law so the frequency ranking has a real order."""
    rng = random.Random(SEED)
    rows = []
    for _ in range(n):
        user = " ".join(f"w{rng.randrange(NUM_WORDS)}" for _ in range(12))
        reply = " ".join(f"w{int(rng.paretovariate(0.6)) % NUM_WORDS}" for _ in range(90))
        rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
    return rows


def recipe_yaml(fx: Fixture) -> dict:
    """The recipe yaml, shaped like Automodel's example of that recipe; paths are relative to the workspace."""
    out = f"outputs/{fx.name}"
    cfg = {
        "recipe": fx.recipe,
        "dist_env": {"backend": "nccl", "timeout_minutes": 30},
        "recipe_args": {"target_model_name_or_path": TARGET_DIR, "train_data_path": DATA_FILE, "output_dir": out,
                        **fx.recipe_args},
        "optimizer": {"lr": 1.0e-4, "betas": [0.9, 0.95], "weight_decay": 0.0},
    }
    if fx.checkpoint_section:
        cfg["checkpoint"] = {"enabled": True, "checkpoint_dir": f"{out}/checkpoints",
                             "model_save_format": "safetensors", "save_consolidated": True}
    return cfg


def inputs_description() -> dict:
    return {
        "target": {"class": "transformers.LlamaForCausalLM", "seed": SEED, **TARGET_SHAPE,
                   "save_pretrained_max_shard_size": TARGET_SHARD_SIZE,
                   "aux_layer_ids_default": [1, TARGET_SHAPE["num_hidden_layers"] // 2 - 1,
                                             TARGET_SHAPE["num_hidden_layers"] - 4]},
        "tokenizer": f"word-level, {len(SPECIAL_TOKENS) + 3 + NUM_WORDS} ids (< vocab_size), chat template "
                     "with {% generation %}",
        "data": "6 chats; assistant turns are the supervised tokens counted for the draft vocab",
        "device": "cpu (compute dtype float32: Automodel uses bfloat16 only on CUDA)",
    }


# ---------------------------------------------------------------------------------------------- one run


def build_fixture(fx: Fixture, work: Path, out: Path) -> dict:
    """Run the recipe in a fresh process, copy its output directory to ``out/<name>``, trim and describe it."""
    import yaml

    cfg_path = work / "recipes" / f"{fx.name}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(recipe_yaml(fx), sort_keys=False))
    run_out = work / "outputs" / fx.name
    if run_out.exists():
        shutil.rmtree(run_out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    log = work / "logs" / f"{fx.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        rc = subprocess.call([sys.executable, str(Path(__file__).resolve()), "--run-recipe", fx.name,
                              "--work", str(work)], cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.stderr.write(log.read_text()[-6000:])
        raise SystemExit(f"[automodel] {fx.recipe} failed for {fx.name} (exit {rc}); full log: {log}")
    dest = out / fx.name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(run_out, dest, symlinks=True)  # LATEST is a relative symlink: keep it one
    pruned = prune(dest, fx)
    return describe(fx, dest, out, pruned)


def _run_recipe(fx: Fixture, work: Path) -> int:
    """Child process: run the recipe's own ``main()`` as ``python -m <module> --config <yaml>`` would."""
    import importlib

    # lora_kernel.py cannot be imported with triton 3.9 on CPU; Automodel treats a missing triton as "no kernels".
    sys.modules["triton"] = None
    import torch
    from transformers import AutoModelForCausalLM

    class _CpuTargetLoader:
        """Stands in for NeMoAutoModelForCausalLM, whose from_pretrained needs CUDA; loads the frozen target."""

        @classmethod
        def from_pretrained(cls, path, *, trust_remote_code=False, torch_dtype=None, force_hf=False, **kwargs):
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                        attn_implementation="eager")

    module = importlib.import_module(fx.module)
    # TrainEagle2Recipe inherits TrainEagle1Recipe.setup, which reads train_eagle1's module global.
    loader_module = importlib.import_module(_E1 if fx.module == _E2 else fx.module)
    loader_module.NeMoAutoModelForCausalLM = _CpuTargetLoader
    torch.manual_seed(SEED)
    random.seed(SEED)
    os.chdir(work)
    sys.argv = [fx.module.replace(".", "/") + ".py", "--config", f"recipes/{fx.name}.yaml"]
    if fx.train:
        module.main()
        return 0
    # main() without run_train_validation_loop: the recipe's setup, then its own final save.
    from nemo_automodel.components.config._arg_parser import parse_args_and_load_config

    recipe = getattr(module, fx.recipe)(parse_args_and_load_config())
    recipe.setup()
    recipe.save_checkpoint(epoch=0, step=0, is_final_checkpoint=True)
    return 0


def prune(dest: Path, fx: Fixture) -> list[dict]:
    """Drop what is too large to commit: ``optim/`` everywhere (its DCP ``.metadata`` also differs run to run)
    and the training shards in ``model/`` except the LATEST checkpoint of ``keep_training_shards`` fixtures."""
    latest = _latest_name(dest / "checkpoints")
    pruned = []
    for ckpt in sorted(p for p in (dest / "checkpoints").iterdir() if p.is_dir() and not p.is_symlink()):
        victims = sorted((ckpt / "optim").rglob("*")) if (ckpt / "optim").is_dir() else []
        keep_shards = fx.keep_training_shards and ckpt.name == latest
        if not keep_shards:
            victims += sorted((ckpt / "model").glob("shard-*.safetensors"))
        for path in victims:
            if path.is_file():
                why = ("training (DCP) shard, the same tensors as consolidated/" if "optim" not in path.parts
                       else "optimizer state (DCP): not byte-identical across runs" if path.name == ".metadata"
                       else "optimizer state (DCP): twice the size of the weights")
                stable = path.name != ".metadata"
                pruned.append({"path": str(path.relative_to(dest)), "bytes": path.stat().st_size,
                               "sha256": _sha256(path) if stable else None, "deterministic": stable, "why": why})
        if (ckpt / "optim").is_dir():
            shutil.rmtree(ckpt / "optim")
        for path in victims:
            if path.exists():
                path.unlink()
    return pruned


# ---------------------------------------------------------------------------------------------- describe


def describe(fx: Fixture, dest: Path, out: Path, pruned: list[dict]) -> dict:
    """The manifest entry: provenance, the file listing, and the facts a test asserts on."""
    root = dest / "checkpoints"
    latest = _latest_name(root)
    checkpoints = {p.name: describe_checkpoint(p) for p in sorted(root.iterdir())
                   if p.is_dir() and not p.is_symlink()}
    link = root / "LATEST"
    return {
        "name": fx.name,
        "path": fx.name,
        "producer": {"package": PRODUCER, "version": metadata.version(PRODUCER)},
        "command": f"python -m {fx.module} --config recipes/{fx.name}.yaml  (cwd: the workspace; run by "
                   f"scripts/producer_fixtures/automodel_fixtures.py --run-recipe {fx.name})",
        "recipe_yaml": recipe_yaml(fx),
        "producer_code": [
            f"{fx.module}.main",
            f"{fx.module}.{fx.recipe} (setup, run_train_validation_loop, save_checkpoint, _build_checkpointer, "
            "_save_extra_state)",
            *fx.classes,
            "nemo_automodel.components.checkpoint.checkpointing.Checkpointer.save_model (save_consolidated=every)",
            "nemo_automodel.components.checkpoint.checkpointing.save_config",
            "nemo_automodel.components.checkpoint.lifecycle.CheckpointLifecycle.publish (LATEST)",
            *(["nemo_automodel.components.datasets.llm.eagle3.build_eagle3_token_mapping",
               f"{_DRAFT3}.set_vocab_mapping"] if fx.module == _E3 else []),
        ],
        "substitutions": [
            "target loaded with transformers.AutoModelForCausalLM (eager attention) instead of "
            "NeMoAutoModelForCausalLM.from_pretrained, which calls torch.cuda.current_device() unconditionally",
            "triton hidden from the import system: nemo_automodel/components/_peft/lora_kernel.py raises at "
            "import with triton 3.9.0 (autotune key 'S' is not a kernel argument)",
            "run on CPU: parameters are float32 (on CUDA the recipe casts the draft to bfloat16)",
            *([] if fx.train else [
                "no training step: PEagleTrainerModule's flex_attention has no backward on CPU "
                "(NotImplementedError), so setup() is followed by save_checkpoint(epoch=0, step=0, "
                "is_final_checkpoint=True); weights are the recipe's initialisation"]),
        ],
        "deterministic": True,
        "nondeterministic_files": [p["path"] for p in pruned if not p["deterministic"]],
        "action": fx.action,
        "why": fx.why,
        "facts": {**default_facts(fx), **fx.facts},
        "output_dir_layout": "the recipe's output_dir; checkpoint.checkpoint_dir (default and in Automodel's "
                             "examples) is <output_dir>/checkpoints, which holds LATEST",
        "latest": _pointer(link),
        "latest_checkpoint": f"checkpoints/{latest}",
        "hf_dir": f"checkpoints/{latest}/model/consolidated",
        "checkpoints": checkpoints,
        "files": listing(dest),
        "pruned_files": pruned,
    }


def default_facts(fx: Fixture) -> dict:
    """Facts that follow from the recipe settings rather than from the files."""
    if fx.module != _E3:
        return {"algorithm": "EAGLE-1/2", "target_layers": TARGET_SHAPE["num_hidden_layers"]}
    n = TARGET_SHAPE["num_hidden_layers"]
    return {"algorithm": "P-EAGLE" if fx.recipe_args.get("parallel_drafting") else
            "EAGLE-3.1" if fx.recipe_args.get("fc_norm") else "EAGLE-3",
            "target_layers": n, "aux_layer_ids": [1, n // 2 - 1, n - 4],
            "aux_layer_ids_source": "Automodel's default (HFEagle3TargetModel), equal to SGLang's default capture"}


def describe_checkpoint(ckpt: Path) -> dict:
    """Config keys, tensor names/shapes/dtypes, meta contents of one ``epoch_E_step_S`` directory."""
    hf = ckpt / "model" / "consolidated"
    config = json.loads((hf / "config.json").read_text())
    tensors = safetensors_tensors(hf)
    layers = sorted({int(n.split("layers.")[1].split(".")[0]) for n in tensors if "layers." in n})
    by_dtype: dict[str, list[str]] = {}
    for name, info in sorted(tensors.items()):
        by_dtype.setdefault(info["dtype"], []).append(name)
    return {
        "config_json": config,
        "config_keys_absent": [k for k in CONFIG_KEYS if k not in config],
        "hf_metadata_config_same_as_consolidated": (ckpt / "model" / ".hf_metadata" / "config.json").read_text()
        == (hf / "config.json").read_text(),
        "weights_files": sorted(p.name for p in hf.glob("*.safetensors")),
        "weights": tensors,
        "dtype_groups": by_dtype,
        "num_layers_in_weights": len(layers),
        "layer_indices_in_weights": layers,
        "top_level_names": sorted({n.split(".")[0] for n in tensors if n != "__metadata__"}),
        "draft_vocab": _draft_vocab(config, tensors),
        "vocab": config.get("vocab_size"),
        "hidden": config.get("hidden_size"),
        "eagle_meta": describe_meta(ckpt / "eagle_meta.pt"),
        "training_shards_in_model_dir": sorted(p.name for p in (ckpt / "model").glob("*.safetensors")),
    }


def _draft_vocab(config: dict, tensors: dict) -> int | None:
    head = tensors.get("lm_head.weight")
    return head["shape"][0] if head else config.get("draft_vocab_size")


def safetensors_tensors(hf: Path) -> dict:
    """``{name: {shape, dtype, file}}`` read from the safetensors headers (every file in ``hf``)."""
    out = {}
    for f in sorted(hf.glob("*.safetensors")):
        with f.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                out[name] = {"shape": info["shape"], "dtype": info["dtype"], "file": f.name}
        out_meta = header.get("__metadata__")
        if out_meta is not None:
            out.setdefault("__metadata__", {})[f.name] = out_meta
    meta = out.pop("__metadata__", None)
    result = dict(sorted(out.items()))
    if meta:
        result["__metadata__"] = meta
    return result


def describe_meta(path: Path) -> dict | None:
    """Keys of ``eagle_meta.pt`` with type, dtype, shape, and the values of small tensors."""
    if not path.is_file():
        return None
    import torch

    meta = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for key, value in meta.items():
        if isinstance(value, torch.Tensor):
            entry = {"type": "tensor", "dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape)}
            if value.dtype == torch.int64 and value.numel() <= 256:
                entry["values"] = value.tolist()
            if value.dtype == torch.bool:
                entry["true_count"] = int(value.sum())
            out[key] = entry
        else:
            out[key] = {"type": type(value).__name__, "value": value}
    return out


def listing(dest: Path) -> list[dict]:
    """Every file (size, sha256) and symlink (target) under ``dest``, sorted."""
    entries = []
    for path in sorted(dest.rglob("*")):
        rel = str(path.relative_to(dest))
        if path.is_symlink():
            entries.append({"path": rel, "symlink_to": os.readlink(path)})
        elif path.is_file():
            entries.append({"path": rel, "bytes": path.stat().st_size, "sha256": _sha256(path)})
    return entries


def _pointer(link: Path) -> dict:
    if link.is_symlink():
        return {"path": "checkpoints/LATEST", "kind": "symlink", "target": os.readlink(link)}
    text = link.with_name("LATEST.txt")
    if text.is_file():
        return {"path": "checkpoints/LATEST.txt", "kind": "text", "target": text.read_text().strip()}
    return {"path": None, "kind": "missing", "target": None}


def _latest_name(root: Path) -> str:
    link = root / "LATEST"
    if link.is_symlink():
        return os.readlink(link).rstrip("/").split("/")[-1]
    return (root / "LATEST.txt").read_text().strip().split("/")[-1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def environment() -> dict:
    versions = {}
    for dist in (PRODUCER, "torch", "transformers", "safetensors", "tokenizers", "triton"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"python": platform.python_version(), **versions}


if __name__ == "__main__":
    sys.exit(main())
