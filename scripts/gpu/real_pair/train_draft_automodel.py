#!/usr/bin/env python3
"""Train an EAGLE-3 draft for a real target with NeMo Automodel 0.7.0's own training code, and save the
run as Automodel's ``TrainEagle3Recipe`` writes it.

    pip install --no-deps --target /tmp/producer-site .whl/nemo_automodel-0.7.0-py3-none-any.whl
    PYTHONPATH=/tmp/producer-site:. python3 scripts/gpu/real_pair/train_draft_automodel.py \\
        --target /tmp/real/target --corpus /tmp/real/draft_corpus.txt --out /tmp/real/automodel_run

Which of Automodel's parts run (the recipe itself, ``TrainEagle3Recipe``, needs Automodel's whole
dependency set -- datasets, megatron-fsdp, torchao, mistral-common, wandb -- which the offline GPU
machine does not have; its parts below import with the wheel alone):

- the co-located target backend ``eagle.target.HFEagle3TargetModel`` (aux hidden states captured by
  forward hooks on the recipe's default layers ``[1, N//2-1, N-4]``, the target's logits, the shift);
- the draft-vocabulary selection ``datasets.llm.eagle3.build_eagle3_token_mapping`` (supervised-token
  frequency, special tokens kept), as ``_setup_online_target`` calls it;
- the draft ``eagle.draft_llama.LlamaEagle3DraftModel``, configured as ``TrainEagle3Recipe.setup``
  configures it (``draft_vocab_size``, ``target_hidden_size``, architectures, untied head, eager
  attention, ``fc_norm``/``norm_output`` off), with ``copy_embeddings_from_target``,
  ``set_vocab_mapping`` and ``freeze_embeddings``;
- the loss: ``eagle.core.Eagle3TrainerModule`` (the test-time-training unroll of ``--ttt-steps``,
  0.8^i step weights, soft cross-entropy against the target's distribution over the draft vocabulary)
  and its per-step metrics, with ``simulated_accept_length`` (the recipe's ``tau_sim``);
- the optimizer as the recipe builds it (AdamW over the trainable parameters, betas 0.9/0.95, grad-norm
  clip 1.0, linear warmup then cosine to 0.1 of the peak: the recipe's ``make_warmup_cosine_schedule``,
  restated here because its module imports torchao);
- the save: Automodel's ``Checkpointer`` (``save_consolidated=True``) and ``CheckpointLifecycle``
  (``LATEST``), ``eagle_meta.pt`` as ``_save_extra_state`` writes it, ``save_config`` for
  ``config.yaml`` (shared with tests/gpu/inputs/automodel_gpu_draft.py).

Written by this script rather than by Automodel: the data loader (fixed-length windows of the
corpus, every position supervised: the recipe's chat-template dataset needs ``datasets``) and the
loop around the recipe's step (``_train_epochs`` holds the distributed and logging machinery).

Output: ``--out`` as the recipe's ``output_dir`` (``checkpoints/LATEST -> epoch_0_step_S/``), and
``automodel_train.json`` beside the checkpoints: parts used, steps, tokens, minutes, the loss curve,
and Automodel's own per-depth figures (``tau_sim`` and the per-step chain survival).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _fixture_helpers():
    """The Automodel import shims and checkpoint writer of the producers' fixture script."""
    path = REPO / "tests" / "gpu" / "inputs" / "automodel_gpu_draft.py"
    spec = importlib.util.spec_from_file_location("automodel_gpu_draft", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=Path, required=True, help="the target's HF directory (with tokenizer)")
    ap.add_argument("--corpus", type=Path, required=True, help="a text file to train on")
    ap.add_argument("--out", type=Path, required=True, help="the run directory to write (must not exist)")
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock training time")
    ap.add_argument("--ttt-steps", type=int, default=4, help="the recipe's ttt_steps (its example yaml: 4)")
    ap.add_argument("--draft-vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-ratio", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    if args.out.exists():
        print(f"--out {args.out} exists; give a new directory (nothing is overwritten)", file=sys.stderr)
        return 2

    os.environ.setdefault("TQDM_DISABLE", "1")  # the vocabulary scan's bar would flood the GPU run's log
    helpers = _fixture_helpers()
    am = helpers.import_automodel()
    _ensure_chat_dataset_imports()
    import torch
    from nemo_automodel.components.datasets.llm.eagle3 import build_eagle3_token_mapping
    from nemo_automodel.components.speculative.eagle.core import Eagle3TrainerModule, simulated_accept_length
    from nemo_automodel.components.speculative.eagle.target import HFEagle3TargetModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # the recipe's compute dtype
    torch.manual_seed(args.seed)
    t0 = time.time()

    tokenizer = AutoTokenizer.from_pretrained(args.target)
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype, attn_implementation="sdpa").to(device)
    target.requires_grad_(False)
    wrapper = HFEagle3TargetModel(target)
    windows = _windows(tokenizer, args.corpus, args.seq_len)
    loader = _loader(windows, args.batch_size, args.seed)

    base = AutoConfig.from_pretrained(args.target)
    special = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
               getattr(tokenizer, "unk_token_id", None)]
    selected_ids, selected_mask = build_eagle3_token_mapping(
        _loader(windows, args.batch_size, args.seed, epochs=1), target_vocab_size=base.vocab_size,
        draft_vocab_size=args.draft_vocab, special_token_ids=special)

    draft_config = base.to_dict()
    draft_config.update(draft_vocab_size=int(selected_ids.numel()), target_hidden_size=base.hidden_size,
                        architectures=["LlamaEagle3DraftModel"], tie_word_embeddings=False,
                        attn_implementation="eager", fc_norm=False, norm_output=False, parallel_drafting=False)
    draft = am.LlamaEagle3DraftModel(type(base).from_dict(draft_config)).to(device=device, dtype=dtype)
    draft.copy_embeddings_from_target(wrapper.get_input_embeddings())
    draft.set_vocab_mapping(selected_ids)
    draft.freeze_embeddings()
    trainer = Eagle3TrainerModule(draft, selected_token_ids=selected_ids, selected_token_mask=selected_mask,
                                  ttt_steps=args.ttt_steps).to(device)
    params = [p for p in trainer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    print(f"draft: {sum(p.numel() for p in params) / 1e6:.1f}M trainable params, draft vocab "
          f"{selected_ids.numel()}, aux layers {wrapper.aux_layer_ids}, ttt_steps {args.ttt_steps} "
          f"({time.time() - t0:.0f}s)", flush=True)

    stats = _train(trainer, wrapper, loader, opt, params, args, device, simulated_accept_length)
    stats["aux_layer_ids"] = list(wrapper.aux_layer_ids)

    spec = {"draft_vocab": int(selected_ids.numel())}
    ckpt = helpers.save_run(am, draft, selected_ids, args.target, spec, args.out, args.out / "checkpoints",
                            stats["steps"], recipe_args=_recipe_args(args, stats))
    helpers.verify(ckpt, draft)
    stats.update(checkpoint=str(ckpt), total_s=round(time.time() - t0, 1), parts=PARTS, args=_jsonable(vars(args)))
    (args.out / "automodel_train.json").write_text(json.dumps(stats, indent=1))
    print(f"wrote {ckpt}: tau_sim {stats['tau_sim']:.2f}, {stats['steps']} steps in {stats['train_s']:.0f}s",
          flush=True)
    return 0


PARTS = ["nemo_automodel.components.speculative.eagle.target.HFEagle3TargetModel",
         "nemo_automodel.components.datasets.llm.eagle3.build_eagle3_token_mapping",
         "nemo_automodel.components.speculative.eagle.draft_llama.LlamaEagle3DraftModel",
         "nemo_automodel.components.speculative.eagle.core.Eagle3TrainerModule",
         "nemo_automodel.components.speculative.eagle.core.simulated_accept_length",
         "nemo_automodel.components.checkpoint (Checkpointer, CheckpointLifecycle, save_config)"]


def _ensure_chat_dataset_imports() -> None:
    """``datasets.llm.eagle3`` imports the chat dataset, which imports two names from ``datasets`` at
    module level; the placeholder ``datasets`` (absent on the GPU machine) needs them."""
    mod = sys.modules.get("datasets")
    if mod is not None and not hasattr(mod, "load_dataset"):
        mod.VerificationMode = type("VerificationMode", (), {"NO_CHECKS": "no_checks"})
        mod.load_dataset = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("datasets is not installed"))


def _windows(tokenizer, corpus: Path, seq_len: int):
    import torch

    ids = tokenizer(corpus.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    n = len(ids) // seq_len
    if n < 1:
        raise SystemExit(f"--corpus {corpus} holds {len(ids)} tokens, fewer than one --seq-len window")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def _loader(windows, batch_size: int, seed: int, epochs: int | None = None):
    """Batches of the recipe's keys (``input_ids``, ``attention_mask``, ``loss_mask``), shuffled per epoch."""
    import torch

    g = torch.Generator().manual_seed(seed)
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(windows.size(0), generator=g)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            ids = windows[order[i:i + batch_size]]
            ones = torch.ones_like(ids)
            yield {"input_ids": ids, "attention_mask": ones, "loss_mask": ones}
        epoch += 1


def _train(trainer, wrapper, loader, opt, params, args, device, simulated_accept_length) -> dict:
    import torch

    budget_s = args.minutes * 60
    t_start = time.time()
    step, seen, total_steps = 0, 0, None
    curve = []
    window_hits = window_valid = None
    for batch in loader:
        elapsed = time.time() - t_start
        if elapsed >= budget_s:
            break
        if step == 10:
            total_steps = max(step + 1, int(step * budget_s / max(elapsed, 1e-6)))
        for g in opt.param_groups:
            g["lr"] = args.lr * _warmup_cosine(step, max(1, int(args.warmup_ratio * (total_steps or 200))),
                                               total_steps or 10**9, 0.1)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        target_batch = wrapper.generate_batch(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                              loss_mask=batch["loss_mask"])
        metrics = trainer(**target_batch.to_trainer_inputs())
        opt.zero_grad(set_to_none=True)
        metrics.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        seen += batch["input_ids"].numel()
        hits, valid = metrics.step_prefix_hits.float().cpu(), metrics.step_valid.float().cpu()
        window_hits = hits if window_hits is None else window_hits + hits
        window_valid = valid if window_valid is None else window_valid + valid
        if step % 25 == 0:
            tau = simulated_accept_length(window_hits, window_valid).item()
            acc = (metrics.accuracy.item() if metrics.accuracy.numel() == 1 else float(metrics.accuracy.mean()))
            curve.append({"step": step, "loss": round(metrics.loss.item(), 4), "accuracy": round(acc, 4),
                          "tau_sim": round(tau, 3), "s": round(elapsed, 1)})
            print(f"step {step} loss {metrics.loss.item():.3f} acc {acc:.3f} tau_sim {tau:.2f} "
                  f"{seen / max(elapsed, 1e-6) / 1e3:.0f}k tok/s {elapsed:.0f}s", flush=True)
            window_hits = window_valid = None
        step += 1
    train_s = time.time() - t_start
    # The last window's figures (since the last log line), or the last logged ones.
    if window_hits is not None and float(window_valid.sum()) > 0:
        survive = (window_hits / window_valid.clamp_min(1.0)).tolist()
        tau = simulated_accept_length(window_hits, window_valid).item()
    else:
        survive, tau = None, curve[-1]["tau_sim"] if curve else None
    return {"steps": step, "tokens_seen": seen, "train_s": round(train_s, 1), "curve": curve,
            "tau_sim": tau, "chain_survival_per_depth": survive, "ttt_steps": args.ttt_steps}


def _warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(max((step - warmup) / max(1, total - warmup), 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _recipe_args(args, stats: dict) -> dict:
    return {"seq_length": args.seq_len, "micro_batch_size": args.batch_size, "num_epochs": 1,
            "ttt_steps": args.ttt_steps, "draft_vocab_size": args.draft_vocab, "freeze_embeddings": True,
            "train_data_path": str(args.corpus), "max_steps_run": stats["steps"]}


def _jsonable(d: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(main())
