#!/usr/bin/env python3
"""Train a small real Llama target from scratch, offline: tokenizer, model, HF directory SGLang serves.

    python3 scripts/gpu/real_pair/train_target.py --out /tmp/real/target --minutes 3.5

The corpus is text this project did not write: the ``.py`` files of the Python installation that runs
the script (its standard library and every package in its site-packages), read in a fixed order and
split by file into training and held-out parts. On the GPU machine that is the PyTorch environment's
packages (torch, transformers, jax, scipy, ...). ``corpus.json`` beside the output names them, with
their byte and token counts.

What it writes (``--out``, which must not exist; built in a temporary sibling and renamed when whole):

- a byte-level BPE tokenizer trained with ``tokenizers`` on the training part (``--vocab``), with the
  special tokens a completions / chat server needs (``<|begin_of_text|>`` as BOS, ``<|end_of_text|>``
  as EOS and pad) and a plain chat template, saved as ``tokenizer.json`` + ``tokenizer_config.json``;
- a ``LlamaForCausalLM`` (GQA; ``--hidden``, ``--layers``, ...) trained in plain PyTorch (fp32 master
  weights, bf16 autocast, fused AdamW, warmup + cosine) for ``--minutes`` of wall-clock time, with a
  fixed seed, saved in bf16 as ``config.json`` + ``model.safetensors`` + ``generation_config.json``;
- ``train_target.json``: sizes, tokens seen, minutes, tokens/s, the training loss curve and the
  held-out validation loss;
- ``draft_corpus.txt`` beside ``--out`` (unless ``--no-draft-corpus``): a slice of the training text
  for the drafts' trainers (they train on text the target was trained on, as users do).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import site
import sys
import sysconfig
import time
from pathlib import Path

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")
HOLD_OUT_EVERY = 50  # every 50th file (in the fixed order) is held out for validation


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the HF directory to write (must not exist)")
    ap.add_argument("--minutes", type=float, default=3.5, help="wall-clock training time")
    ap.add_argument("--max-total-s", type=float, default=None,
                    help="bound the whole run: training gets what corpus and tokenizer leave, less 40 s to save")
    ap.add_argument("--max-corpus-mb", type=float, default=400.0, help="stop reading the corpus past this")
    ap.add_argument("--tokenizer-mb", type=float, default=60.0, help="text the tokenizer is trained on")
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--intermediate", type=int, default=2560)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup-steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default=None)
    ap.add_argument("--roots", nargs="*", type=Path, default=None,
                    help="directories whose .py files form the corpus (default: stdlib + site-packages)")
    ap.add_argument("--no-draft-corpus", action="store_true")
    args = ap.parse_args()
    if args.out.exists():
        print(f"--out {args.out} exists; give a new directory (nothing is overwritten)", file=sys.stderr)
        return 2

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    work = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)  # our own leftover from a killed run
    work.mkdir(parents=True)
    t0 = time.time()

    roots = args.roots or default_roots()
    files = corpus_files(roots)
    train_text, val_text, corpus = read_corpus(files, roots, int(args.max_corpus_mb * 2**20))
    log(f"corpus: {corpus['files']} files, {corpus['bytes'] / 2**20:.0f} MiB from {len(corpus['packages'])} "
        f"packages ({time.time() - t0:.0f}s)")

    tokenizer = train_tokenizer(train_text, args.vocab, int(args.tokenizer_mb * 2**20))
    hf_tok = save_tokenizer(tokenizer, work)
    train_ids = encode(tokenizer, train_text)
    val_ids = encode(tokenizer, val_text)
    corpus.update(train_tokens=int(train_ids.numel()), val_tokens=int(val_ids.numel()), vocab=args.vocab)
    log(f"tokens: {train_ids.numel() / 1e6:.1f} M train, {val_ids.numel() / 1e6:.2f} M held out "
        f"({time.time() - t0:.0f}s)")
    if not args.no_draft_corpus:
        # The drafts' trainers read text; 8 MiB is more than three minutes of draft training consume.
        (args.out.parent / "draft_corpus.txt").write_text("".join(train_text)[: 8 * 2**20])

    if args.max_total_s is not None:
        args.minutes = max(0.5, min(args.minutes, (args.max_total_s - (time.time() - t0) - 40) / 60))
    model, config = build_model(args, hf_tok, device)
    stats = train(model, train_ids, val_ids, args, device)
    model.to(torch.bfloat16)
    model.save_pretrained(work, safe_serialization=True)
    stats.update(params=sum(p.numel() for p in model.parameters()), corpus=corpus,
                 config={k: getattr(config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                          "num_attention_heads", "num_key_value_heads", "vocab_size")},
                 seed=args.seed, device=torch.cuda.get_device_name() if device == "cuda" else device,
                 torch=torch.__version__, total_s=round(time.time() - t0, 1))
    (work / "train_target.json").write_text(json.dumps(stats, indent=1))
    (args.out.parent / "corpus.json").write_text(json.dumps(corpus, indent=1))
    os.replace(work, args.out)
    log(f"wrote {args.out}: {stats['params'] / 1e6:.0f}M params, val loss {stats['val_loss']:.3f}, "
        f"{stats['tokens_seen'] / 1e6:.0f}M tokens in {stats['train_s']:.0f}s ({time.time() - t0:.0f}s in all)")
    return 0


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------- corpus


def default_roots() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]:
        if Path(p).is_dir() and Path(p) not in roots:
            roots.append(Path(p))
    return roots


def corpus_files(roots: list[Path]) -> list[Path]:
    """Every ``.py`` file under ``roots``, in a fixed order (tests and site-packages included)."""
    files: list[Path] = []
    seen: set[Path] = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if "site-packages" in dirnames and root.name != "site-packages":
                dirnames.remove("site-packages")  # read once, as its own root
            for name in sorted(filenames):
                if name.endswith(".py"):
                    p = Path(dirpath) / name
                    real = p.resolve()
                    if real not in seen:
                        seen.add(real)
                        files.append(p)
    return files


def read_corpus(files: list[Path], roots: list[Path], max_bytes: int) -> tuple[list[str], list[str], dict]:
    train, val = [], []
    packages: dict[str, int] = {}
    total = 0
    for i, p in enumerate(files):
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not text.strip():
            continue
        (val if i % HOLD_OUT_EVERY == 0 else train).append(text + "\n")
        pkg = package_of(p, roots)
        packages[pkg] = packages.get(pkg, 0) + len(text)
        total += len(text)
        if total >= max_bytes:
            break
    top = dict(sorted(packages.items(), key=lambda kv: -kv[1]))
    return train, val, {"files": len(train) + len(val), "bytes": total, "roots": [str(r) for r in roots],
                        "packages": top, "held_out_every": HOLD_OUT_EVERY}


def package_of(path: Path, roots: list[Path]) -> str:
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        return ("stdlib/" if root.name != "site-packages" else "") + rel.parts[0].removesuffix(".py")
    return "other"


# ---------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab: int, max_bytes: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def sample():
        n = 0
        for t in texts:
            yield t
            n += len(t)
            if n >= max_bytes:
                return

    tok.train_from_iterator(sample(), trainer=trainer)
    return tok


def save_tokenizer(tok, out: Path):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                 model_max_length=4096)
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)
    return hf


def encode(tok, texts: list[str]):
    """One stream of ids: each file is a document, EOS between documents."""
    import torch

    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.int32)


# ---------------------------------------------------------------------------------------------- model


def build_model(args, hf_tok, device: str):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(hf_tok), hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=hf_tok.bos_token_id,
                         eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id,
                         attn_implementation="sdpa")
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
                                               pad_token_id=hf_tok.pad_token_id)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params on {device}")
    return model, config


def batches(ids, seq_len: int, batch_size: int, seed: int):
    """Random windows of the stream, seeded: the same run draws the same batches."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = ids.numel() - seq_len - 1
    while True:
        starts = torch.randint(0, n, (batch_size,), generator=g)
        yield torch.stack([ids[s:s + seq_len + 1] for s in starts.tolist()]).long()


def train(model, train_ids, val_ids, args, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device == "cuda")
    budget_s = args.minutes * 60
    est_steps = None
    curve = []
    seen = 0
    t_start = time.time()
    step = 0
    autocast = torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)
    model.train()
    for batch in batches(train_ids, args.seq_len, args.batch_size, args.seed):
        elapsed = time.time() - t_start
        if elapsed >= budget_s:
            break
        if step == 20:  # the cosine's length, from the measured speed of the first steps
            est_steps = max(step + 1, int(step * budget_s / max(elapsed, 1e-6)))
        lr = lr_at(step, args.warmup_steps, est_steps, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = batch.to(device, non_blocking=True)
        with autocast:
            logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += batch[:, 1:].numel()
        if step % 50 == 0:
            rate = seen / max(time.time() - t_start, 1e-6)
            curve.append({"step": step, "loss": round(loss.item(), 4), "lr": lr, "s": round(elapsed, 1)})
            log(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {rate / 1e3:.0f}k tok/s {elapsed:.0f}s")
        step += 1
    train_s = time.time() - t_start
    val = validation_loss(model, val_ids, args.seq_len, device, autocast)
    log(f"held-out loss {val:.3f} after {step} steps")
    return {"steps": step, "tokens_seen": seen, "train_s": round(train_s, 1),
            "tokens_per_s": round(seen / max(train_s, 1e-6)), "val_loss": round(val, 4),
            "final_train_loss": curve[-1]["loss"] if curve else None, "curve": curve,
            "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr}


def lr_at(step: int, warmup: int, total: int | None, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    if total is None:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def validation_loss(model, val_ids, seq_len: int, device: str, autocast, max_windows: int = 256) -> float:
    import torch
    import torch.nn.functional as F

    model.eval()
    n = min(max_windows, (val_ids.numel() - 1) // seq_len)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, 16):
            rows = [val_ids[j * seq_len:(j + 1) * seq_len + 1].long() for j in range(i, min(n, i + 16))]
            batch = torch.stack(rows).to(device)
            with autocast:
                logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1),
                                   reduction="sum")
            total += loss.item()
            count += batch[:, 1:].numel()
    model.train()
    return total / max(count, 1)


if __name__ == "__main__":
    sys.exit(main())
