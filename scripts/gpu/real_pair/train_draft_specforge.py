#!/usr/bin/env python3
"""Train an EAGLE-3 draft for an HF Llama target with SpecForge 0.2.0's own training code.

    pip install --no-deps --target /tmp/sf-site .whl-specforge/specforge-0.2.0-py3-none-any.whl
    PYTHONPATH=/tmp/sf-site:$PYTHONPATH python scripts/gpu/real_pair/train_draft_specforge.py \\
        --target /tmp/pair/target --corpus /usr/lib/python3.12 --out /tmp/pair/specforge_run --minutes 3

    # a tiny random target to try it on a CPU (seconds):
    python scripts/gpu/real_pair/train_draft_specforge.py --make-tiny-target /tmp/tiny --corpus /usr/lib/python3.12/json
    python scripts/gpu/real_pair/train_draft_specforge.py --target /tmp/tiny --corpus /usr/lib/python3.12/json \\
        --out /tmp/tiny-sf --minutes 0.3 --seq-len 128 --batch-size 2 --draft-vocab 512

What it writes (``--out``, which must not exist), all of it by SpecForge's code except the two JSON files:

    OUT/draft_config.json                 the --draft-config of this run (SpecForge generated it)
    OUT/{run_id}-step{N}/training_state.pt, training_state_rank0.pt   (TrainerController.save_checkpoint)
    OUT/{run_id}-latest -> {run_id}-step{N}                          (CheckpointManager)
    OUT/cache/vocab_mapping/<key>.pt      the d2t/t2d file, where SpecForge caches it
    OUT/sglang_export/{config.json,model.safetensors}   (specforge export --to sglang), unless --no-export
    OUT/specforge_train.json              what ran, steps, tokens, minutes, loss curve, per-position accuracy

It prints a line per ``--log-interval`` steps (step, loss, acc, acc per TTT position, lr, tokens/s).
Exit status: 0 done; 1 bad input or training failed (``OUT`` removed); 3 trained and saved, but the
export failed (its error is in the JSON and on stderr).

SpecForge's parts that run (module: name):

- ``specforge.training.model_loading``: ``_generate_draft_config`` with the EAGLE-3 provider's
  ``DraftConfigProvider`` (``specforge.algorithms.eagle3.providers.algorithm_providers``), i.e. the
  draft config SpecForge derives from the target when ``model.draft_model_config`` is omitted;
  ``draft_vocab_size`` set to ``--draft-vocab``, written to ``OUT/draft_config.json`` and read back
  with ``load_draft_config_source`` (SpecForge's reader of ``--draft-config``).
- ``specforge.modeling.auto.AutoDraftModel.from_config`` -> ``LlamaForCausalLMEagle3``
  (``specforge.modeling.draft.llama3_eagle``), then ``load_vocab_mapping``, ``load_embedding`` (from the
  target's safetensors), ``freeze_embedding``: the steps of ``model_providers.build_eagle3_draft``.
- Vocab mapping: ``specforge.data.preprocessing.process_token_dict_to_mappings`` over the frequencies of
  the loss-bearing tokens of the training windows (what ``training.assembly._install_dataset_vocab_mapping``
  does with ``count_effective_feature_tokens``), saved where that function caches it.
- ``specforge.algorithms.eagle3.model.OnlineEagle3Model`` (TTT unroll ``--ttt-length``, SpecForge's default
  7; ``LogSoftmaxLoss`` from ``specforge.core.loss``, a Triton kernel; per-position accuracy and
  acceptance rate), the training model ``model_providers.build_eagle3_model`` builds. On a CPU the loss
  is ``specforge.core.loss._compute_loss``, SpecForge's reference implementation of the same loss (the
  Triton kernel under Triton's interpreter takes tens of seconds a step).
- ``specforge.modeling.target.target_head.TargetHead``: the frozen target lm_head and its ``preprocess``
  shift, as SpecForge's offline/consumer path applies them to the captured final hidden state.
- ``specforge.algorithms.eagle3.data.normalize_offline_sample`` and
  ``specforge.algorithms.common.collation.concatenate_features``: each sample laid out as SpecForge's
  feature records (last loss position masked, ``attention_mask``), batched, as ``TrainBatch``.
- ``Eagle3TrainStrategy`` (built by the provider's ``StepProvider.build``; p-loss weights 0.8**i),
  ``TrainerCore`` (forward, backward, optimizer boundary, metric reduction), ``TrainerController.fit``
  (the loop, logging) and ``TrainerController.save_checkpoint`` -> ``CheckpointManager.save``.
- ``specforge.training.backend.FSDPTrainingBackend`` with ``prepare_model(wrap=False)`` (one process: no
  FSDP/DDP wrapper, as SpecForge runs a module it does not wrap) and ``specforge.optimizer.BF16Optimizer``
  (fp32 AdamW masters, grad clip 0.5, SpecForge's warmup + cosine or constant schedule).
- The checkpoint contract SpecForge's ``Trainer`` persists: the provider's ``StepProvider.bind_runtime``
  with ``specforge.training.provenance.model_resume_provenance`` (``specforge_model_provenance``, which
  records the draft config's path) plus the trainer-owned fields (batch size, total steps, ...).
- ``specforge export --to sglang``: ``specforge.cli.main`` when ``pydantic`` is importable (the CLI parses
  its typed config module at import), else ``specforge.export.to_sglang.main`` (the function the CLI calls).

What is replaced, and why:

- The target backend. SpecForge 0.2.0 has no in-process HF target any more (``config/schema.py``:
  "the in-process HF/custom target backends were removed with the server-only cutover"); online capture
  needs an SGLang server, offline capture needs SGLang too (``prepare_hidden_states.py``). Here the HF
  ``LlamaForCausalLM`` computes, per batch, what SGLang's capture would: the outputs of the target layers
  ``[1, N//2-1, N-4]`` (``resolve_eagle_capture_layers``'s default, SGLang's numbering: layer i's output is
  HF ``hidden_states[i+1]``) concatenated as ``aux_hidden_state`` and the final normed hidden state as
  ``hidden_state``. Writing them to disk first would cost tens of GB for a few minutes of training.
- The data pipeline (``FeatureStore``, ``FeatureDataLoader``, chat templates): the corpus is plain text
  (Python files), cut into ``--seq-len`` windows of the target's tokens with EOS between documents (a
  ``.txt`` is one stream); every token but each window's last is a loss token (no prompt to mask).
- ``Trainer`` / ``training.assembly`` and the typed ``Config``: they need pydantic and the feature store;
  the pieces they assemble are built one by one above, with ``SimpleNamespace`` standing in for the
  config fields those functions read.
- The step budget: SpecForge stops at ``max_steps``; this script bounds wall-clock time. It times a few
  forward/backward passes first (gradients dropped, no update) and sets the schedule's ``total_steps``
  (and ``max_steps``) from the time left, then the data stream ends at the deadline.
- When the target has no ``*.index.json`` (a single ``model.safetensors``) or ties its lm_head to the
  embedding, ``TargetHead.from_pretrained`` cannot read its weight (it requires an index and an
  ``lm_head.weight`` entry); the ``TargetHead`` is then built by its constructor and given the loaded
  target's output embedding, and the JSON says so.
- ``torch.compile``: SpecForge decorates a few helpers with it; they run eagerly unless ``--compile``
  (compiling would take part of a three-minute budget). ``attention_backend`` is ``sdpa`` (SpecForge's
  default ``flex_attention`` is meant to be compiled; under TTT its ``sdpa`` path is eager attention).
- If SpecForge's Triton ``LogSoftmaxLoss`` fails on the first step (the kernel cannot be built there), its
  reference ``specforge.core.loss._compute_loss`` takes over, with a warning and a line in the JSON.

Imports: only the modules named above. Where one imports at module level something this path never
uses and the machine lacks, a placeholder module stands in: ``datasets`` (``Dataset`` for type hints in
``specforge.data.preprocessing``), ``pydantic`` (``BaseModel`` for ``specforge.data.template``'s chat
templates, built at import). SGLang, wandb, yunchang, openai-harmony and tensorboard are never imported.

Wheels for the GPU machine (Python 3.12, torch 2.11, transformers 5.17, triton, no network):
``specforge-0.2.0-py3-none-any.whl`` only. Optional, to run the real ``specforge`` CLI for the export
instead of its export function: ``pydantic``, ``pydantic-core`` (cp312 manylinux), ``annotated-types``,
``typing-inspection``. All four are in ``.whl-specforge/`` after ``pip download`` (see the report).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import random
import shutil
import sys
import time
import types
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

RUN_ID = "specforge-eagle3"
WHEEL_HINT = ("pip install --no-deps --target /tmp/sf-site .whl-specforge/specforge-0.2.0-py3-none-any.whl "
              "&& export PYTHONPATH=/tmp/sf-site:$PYTHONPATH")
PROBE_STEPS = 3


class Fail(Exception):
    """A failure with a message for the user (printed without a traceback, exit 1)."""


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        if args.make_tiny_target:
            make_tiny_target(args.make_tiny_target, args.corpus, args.seed)
            return 0
        _check_args(args)
        return train(args)
    except Fail as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=Path, help="HF Llama directory with tokenizer files")
    ap.add_argument("--corpus", type=Path, required=True,
                    help="a directory (its .py files, recursively), a .txt or a .jsonl ('text' field)")
    ap.add_argument("--out", type=Path, help="SpecForge output directory to create (must not exist)")
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock bound on training (default 3)")
    ap.add_argument("--seq-len", type=int, default=1024,
                    help="tokens per sample (SpecForge's max_length; keep within the target's training context)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (SpecForge's default is 1e-4, "
                    "for runs of hours)")
    ap.add_argument("--lr-scheduler", choices=("cosine", "constant"), default="cosine")
    ap.add_argument("--warmup-ratio", type=float, default=0.015, help="SpecForge's default")
    ap.add_argument("--ttt-length", type=int, default=7, help="TTT unroll (SpecForge's default 7)")
    ap.add_argument("--draft-vocab", type=int, default=8192, help="draft vocabulary (< the target's)")
    ap.add_argument("--max-tokens", type=int, default=20_000_000, help="corpus tokens to read at most")
    ap.add_argument("--eval-windows", type=int, default=32, help="held-out windows for the final accuracy")
    ap.add_argument("--log-interval", type=int, default=10, help="optimizer steps between progress lines")
    ap.add_argument("--save-interval", type=int, default=0, help="also save every N steps (0: at the end)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--compile", action="store_true", help="keep SpecForge's torch.compile decorators")
    ap.add_argument("--no-export", action="store_true", help="skip specforge export --to sglang")
    ap.add_argument("--make-tiny-target", type=Path, metavar="DIR",
                    help="write a tiny random Llama target (BPE tokenizer trained on --corpus) to DIR and exit")
    return ap.parse_args(argv)


def _check_args(args: argparse.Namespace) -> None:
    if args.target is None or args.out is None:
        raise Fail("--target and --out are required (or --make-tiny-target DIR)")
    if not (args.target / "config.json").is_file():
        raise Fail(f"--target {args.target}: no config.json there; give an HF Llama directory")
    if not any((args.target / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        raise Fail(f"--target {args.target}: no tokenizer.json / tokenizer.model; the corpus is tokenized "
                   "with the target's tokenizer")
    if not args.corpus.exists():
        raise Fail(f"--corpus {args.corpus} does not exist")
    if args.out.exists():
        raise Fail(f"--out {args.out} exists; give a new directory (nothing there is touched)")
    for name in ("minutes", "seq_len", "batch_size", "lr", "ttt_length", "draft_vocab", "max_tokens"):
        if getattr(args, name) <= 0:
            raise Fail(f"--{name.replace('_', '-')}={getattr(args, name)} must be positive")
    if args.seq_len <= args.ttt_length + 1:
        raise Fail(f"--seq-len={args.seq_len} must exceed --ttt-length + 1 ({args.ttt_length + 1})")


# ----------------------------------------------------------------------------------------- imports


def import_specforge(device_type: str, compile_helpers: bool) -> SimpleNamespace:
    """SpecForge's modules this path uses, with placeholders only for absent module-level imports."""
    os.environ["SPECFORGE_DEVICE"] = device_type  # SpecForge's get_local_device() reads it
    if device_type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # triton imports without a GPU; its kernels are not run
    if importlib.util.find_spec("specforge") is None:
        raise Fail(f"specforge is not importable. From the repository root: {WHEEL_HINT}")
    placeholders = [name for name, make in (("datasets", _placeholder_datasets), ("pydantic", _placeholder_pydantic))
                    if _ensure_module(name, make)]
    import torch

    if not compile_helpers:
        torch._dynamo.config.disable = True  # SpecForge's @torch.compile helpers run eagerly
    try:
        from importlib.metadata import version

        from specforge.algorithms.common.collation import concatenate_features
        from specforge.algorithms.eagle3 import providers as eagle3_providers
        from specforge.algorithms.eagle3.data import normalize_offline_sample
        from specforge.algorithms.eagle3.model import OnlineEagle3Model
        from specforge.data.preprocessing import process_token_dict_to_mappings
        from specforge.modeling.auto import AutoDraftModel
        from specforge.modeling.target.target_head import TargetHead
        from specforge.optimizer import BF16Optimizer
        from specforge.runtime.contracts import TrainBatch
        from specforge.training.backend import FSDPTrainingBackend, ParallelConfig
        from specforge.training.controller import TrainerController, TrainerCore
        from specforge.training.model_loading import _generate_draft_config, load_draft_config_source
        from specforge.training.provenance import model_resume_provenance
    except ImportError as exc:
        raise Fail(f"importing SpecForge's training modules failed: {exc}. Install the wheel ({WHEEL_HINT}); "
                   "torch, transformers, safetensors, triton, tqdm, psutil and pyyaml must be there too") from exc
    if device_type == "cpu":
        # The Triton kernel under Triton's interpreter takes tens of seconds a step on a CPU; SpecForge's own
        # reference implementation of the same loss (core/loss.py) stands in for it there.
        use_reference_loss()
    sf_version = version("specforge")
    if sf_version != "0.2.0":
        print(f"warning: specforge {sf_version} is installed; this script was written against 0.2.0", file=sys.stderr)
    return SimpleNamespace(
        concatenate_features=concatenate_features, eagle3_providers=eagle3_providers,
        normalize_offline_sample=normalize_offline_sample, OnlineEagle3Model=OnlineEagle3Model,
        process_token_dict_to_mappings=process_token_dict_to_mappings, AutoDraftModel=AutoDraftModel,
        TargetHead=TargetHead, BF16Optimizer=BF16Optimizer, TrainBatch=TrainBatch,
        FSDPTrainingBackend=FSDPTrainingBackend, ParallelConfig=ParallelConfig, TrainerController=TrainerController,
        TrainerCore=TrainerCore, _generate_draft_config=_generate_draft_config,
        load_draft_config_source=load_draft_config_source, model_resume_provenance=model_resume_provenance,
        placeholders=placeholders, sf_version=sf_version)


def use_reference_loss() -> None:
    """Put ``specforge.core.loss._compute_loss`` (the reference of the Triton ``LogSoftmaxLoss``) in its place."""
    from specforge.algorithms.eagle3 import model as eagle3_model
    from specforge.core.loss import _compute_loss

    eagle3_model.LogSoftmaxLoss = type("ReferenceLogSoftmaxLoss", (), {"apply": staticmethod(_compute_loss)})


def _ensure_module(name: str, make) -> bool:
    """Import ``name``, or install ``make()`` in its place when it cannot be imported; True if placed."""
    try:
        importlib.import_module(name)
        return False
    except Exception:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]
        sys.modules[name] = make()
        return True


def _placeholder_datasets() -> types.ModuleType:
    mod = types.ModuleType("datasets")
    mod.Dataset = type("Dataset", (), {})  # only annotations in specforge.data.{preprocessing,utils}
    mod.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    return mod


def _placeholder_pydantic() -> types.ModuleType:
    class BaseModel:  # specforge.data.template builds ChatTemplate(**fields) at import; never validated here
        def __init__(self, **fields):
            self.__dict__.update(fields)

    mod = types.ModuleType("pydantic")
    mod.BaseModel = BaseModel
    mod.__spec__ = importlib.machinery.ModuleSpec("pydantic", None)
    return mod


# ------------------------------------------------------------------------------------------ corpus


def _corpus_documents(corpus: Path, seed: int):
    """Texts of the corpus: a directory's .py files (seeded order), a .txt, or a .jsonl's 'text' fields."""
    if corpus.is_dir():
        files = sorted(p for p in corpus.rglob("*.py") if p.is_file())
        if not files:
            raise Fail(f"--corpus {corpus}: no .py files under it")
        random.Random(seed).shuffle(files)
        for p in files:
            try:
                yield p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
    elif corpus.suffix == ".jsonl":
        with corpus.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise Fail(f"--corpus {corpus}: line {n} is not JSON ({exc.msg})") from exc
                text = next((row[k] for k in ("text", "content", "prompt") if isinstance(row.get(k), str)), None)
                if text is None:
                    raise Fail(f"--corpus {corpus}: line {n} has no 'text' (or 'content'/'prompt') string")
                yield text
    else:  # one text stream: cut at line ends into pieces the tokenizer encodes in parallel
        text = corpus.read_text(encoding="utf-8", errors="replace")
        start = 0
        while start < len(text):
            end = text.find("\n", start + _TXT_PIECE)
            end = len(text) if end < 0 else end + 1
            yield text[start:end]
            start = end


_TXT_PIECE = 1 << 16


def tokenize_corpus(tokenizer, corpus: Path, seq_len: int, max_tokens: int, seed: int):
    """``[n, seq_len]`` windows of the target's tokens; and the number of documents (or .txt pieces)."""
    import torch

    # documents are joined by EOS; the pieces of one .txt stream are not
    eos = tokenizer.eos_token_id if corpus.is_dir() or corpus.suffix == ".jsonl" else None
    ids: list[int] = []
    docs = 0
    batch: list[str] = []

    def flush():
        nonlocal docs
        for row in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            ids.extend(row)
            if eos is not None:
                ids.append(eos)
            docs += 1
        batch.clear()

    for text in _corpus_documents(corpus, seed):
        if text.strip() or eos is None:
            batch.append(text)
        if len(batch) >= 256:
            flush()
            if len(ids) >= max_tokens:
                break
    if batch:
        flush()
    n = min(len(ids), max_tokens) // seq_len
    if n < 2:
        raise Fail(f"--corpus {corpus} gave {len(ids)} tokens: fewer than two windows of --seq-len={seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len), docs


# --------------------------------------------------------------------------------------- tiny target


def make_tiny_target(out: Path, corpus: Path, seed: int) -> None:
    """A random 8-layer Llama (hidden 64) with a 2000-token BPE trained on the corpus, for CPU tests."""
    if out.exists():
        raise Fail(f"--make-tiny-target {out} exists; give a new directory")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus_documents(corpus, seed),
                            trainers.BpeTrainer(vocab_size=2000, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=8, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, vocab_size=len(fast), max_position_embeddings=4096,
                         rms_norm_eps=1e-5, rope_theta=500000.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    fast.save_pretrained(out)
    print(f"wrote a tiny target to {out} (vocab {len(fast)})")


# ------------------------------------------------------------------------------------------- train


def _cfg(target: Path, draft_config_path: Path | None) -> SimpleNamespace:
    """The fields of SpecForge's typed ``Config`` that the functions called here read (their defaults)."""
    model = SimpleNamespace(target_model_path=str(target), cache_dir=None, trust_remote_code=False,
                            draft_model_config=str(draft_config_path) if draft_config_path else None,
                            vocab_mapping_path="", embedding_key="model.embed_tokens.weight",
                            lm_head_key="lm_head.weight", load_target_embedding=True, input_modality="text",
                            torch_dtype="bfloat16", aux_hidden_state_layer_ids=None)
    training = SimpleNamespace(strategy="eagle3", compact_teacher=False, compact_teacher_chunk_size=None)
    return SimpleNamespace(model=model, training=training, mode="online")


def train(args: argparse.Namespace) -> int:
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Fail("--device cuda but torch sees no GPU; give --device cpu")
    sf = import_specforge(device.type, args.compile)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    t_start = time.monotonic()
    parts, replaced = [], []

    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(args.target)
    target = LlamaForCausalLM.from_pretrained(args.target, dtype=torch.bfloat16).to(device).eval()
    target.requires_grad_(False)
    target_vocab = int(target.config.vocab_size)
    if args.draft_vocab >= target_vocab:
        raise Fail(f"--draft-vocab={args.draft_vocab} must be smaller than the target's vocab_size={target_vocab}")

    t0 = time.monotonic()
    windows, docs = tokenize_corpus(tokenizer, args.corpus, args.seq_len, args.max_tokens, args.seed)
    n_eval = min(args.eval_windows, max(1, len(windows) // 10))
    perm = torch.randperm(len(windows), generator=torch.Generator().manual_seed(args.seed))
    eval_windows, train_windows = windows[perm[:n_eval]], windows[perm[n_eval:]]
    print(f"corpus: {docs} documents, {windows.numel()} tokens, {len(train_windows)} training windows of "
          f"{args.seq_len} (+{n_eval} held out), tokenized in {time.monotonic() - t0:.1f}s", flush=True)

    args.out.mkdir(parents=True)
    try:
        return _train_into(args, sf, device, target, target_vocab, train_windows, eval_windows, docs, t_start,
                           parts, replaced)
    except BaseException as exc:
        shutil.rmtree(args.out, ignore_errors=True)  # made above: nothing half-written is left behind
        if isinstance(exc, Fail):
            raise
        if not isinstance(exc, Exception):
            raise
        raise Fail(f"training failed: {type(exc).__name__}: {exc} ({args.out} removed)") from exc


def _train_into(args, sf, device, target, target_vocab, train_windows, eval_windows, docs, t_start, parts, replaced):
    import torch

    out = args.out.resolve()
    target_path = str(args.target.resolve())
    capture_layers = None

    # draft config: SpecForge derives it from the target, the run fixes the draft vocab
    provider = sf.eagle3_providers.algorithm_providers()
    generated = sf._generate_draft_config(_cfg(args.target.resolve(), None), provider.model.draft_config)
    generated.draft_vocab_size = args.draft_vocab
    draft_config_path = out / "draft_config.json"
    draft_config_path.write_text(json.dumps(generated.to_dict(), indent=2, sort_keys=True) + "\n")
    draft_config = sf.load_draft_config_source(str(draft_config_path))
    cfg = _cfg(Path(target_path), draft_config_path)
    parts += ["specforge.training.model_loading._generate_draft_config (EAGLE-3 DraftConfigProvider)",
              "specforge.training.model_loading.load_draft_config_source"]
    capture_layers = sf.eagle3_providers.resolve_capture_layers(cfg, draft_config, target.config)
    parts.append("specforge.algorithms.model_providers.resolve_eagle_capture_layers")

    # vocab mapping from the loss-bearing tokens (each window's last position carries no loss)
    loss_tokens = train_windows[:, :-1].reshape(-1)
    freq = torch.bincount(loss_tokens, minlength=target_vocab)
    nz = torch.nonzero(freq).view(-1)
    counts = Counter(dict(zip(nz.tolist(), freq[nz].tolist(), strict=True)))
    d2t, t2d = sf.process_token_dict_to_mappings(counts, args.draft_vocab, target_vocab)
    vm_dir = out / "cache" / "vocab_mapping"
    vm_dir.mkdir(parents=True)
    vm_path = vm_dir / f"{RUN_ID}-{target_vocab}-{args.draft_vocab}.pt"
    torch.save({"d2t": d2t, "t2d": t2d}, vm_path)
    coverage = float(freq[t2d.bool()].sum() / freq.sum())
    parts.append("specforge.data.preprocessing.process_token_dict_to_mappings")

    # draft model, as build_eagle3_draft builds it
    draft = sf.AutoDraftModel.from_config(draft_config, attention_backend="sdpa", torch_dtype=torch.bfloat16)
    draft.load_vocab_mapping(str(vm_path))
    draft.load_embedding(target_path, embedding_key=cfg.model.embedding_key)
    draft.freeze_embedding()
    draft = draft.to(device=device, dtype=torch.bfloat16)
    parts += [f"specforge.modeling.auto.AutoDraftModel.from_config -> {type(draft).__module__}.{type(draft).__name__}",
              "Eagle3DraftModel.load_vocab_mapping / load_embedding / freeze_embedding"]
    model = sf.OnlineEagle3Model(draft_model=draft, length=args.ttt_length, attention_backend="sdpa",
                                 lk_loss_type=None, kl_scale=1.0, kl_decay=1.0).to(device=device, dtype=torch.bfloat16)
    parts += ["specforge.algorithms.eagle3.model.OnlineEagle3Model (TTT, LogSoftmaxLoss, per-position acc)",
              "specforge.core.loss.LogSoftmaxLoss"]
    target_head, head_how = _target_head(sf, target_path, target, device)
    parts.append(f"specforge.modeling.target.target_head.TargetHead ({head_how})")
    if device.type == "cpu":
        replaced.append("CPU only: LogSoftmaxLoss (Triton) -> specforge.core.loss._compute_loss, SpecForge's "
                        "reference implementation of the same loss (Triton's interpreter is too slow)")
    if head_how != "TargetHead.from_pretrained":
        replaced.append(f"TargetHead.load_weights: {head_how}")
    strategy = provider.step.build(model, target_head=target_head, **provider.step.options(cfg))
    parts.append(f"{type(strategy).__module__}.{type(strategy).__name__} (ploss_decay {strategy.ploss_decay})")

    batches = _batches(sf, target, train_windows, capture_layers, args.batch_size, device, args.seed)
    n_params = sum(p.numel() for p in draft.parameters() if p.requires_grad)
    print(f"draft: {n_params / 1e6:.1f}M trainable parameters, vocab {args.draft_vocab} of {target_vocab} "
          f"(covers {coverage:.1%} of the loss tokens), capture layers {capture_layers}, TTT {args.ttt_length}",
          flush=True)

    # probe: time forward/backward to size the schedule to the wall-clock bound (no update)
    t_bound = time.monotonic()  # the bound covers the probe and the training steps, not loading
    deadline = t_bound + args.minutes * 60
    t_probe = t_bound
    model.train()
    for i in range(PROBE_STEPS + 1):
        if i == 1:
            t_probe = time.monotonic()
        batch = next(batches)
        try:
            strategy.forward_loss(batch).loss.backward()
        except Exception as exc:  # the Triton kernel could not be built or run here: SpecForge's reference loss
            if i > 0 or device.type == "cpu":
                raise
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"warning: SpecForge's Triton LogSoftmaxLoss failed ({type(exc).__name__}: {why}); using its "
                  "reference implementation, specforge.core.loss._compute_loss", file=sys.stderr, flush=True)
            use_reference_loss()
            replaced.append(f"LogSoftmaxLoss (Triton) -> specforge.core.loss._compute_loss: the kernel failed "
                            f"({type(exc).__name__}: {why})")
            model.zero_grad(set_to_none=True)
            strategy.forward_loss(batch).loss.backward()
        model.zero_grad(set_to_none=True)
    _sync(device)
    step_s = (time.monotonic() - t_probe) / PROBE_STEPS
    total_steps = max(1, int((deadline - time.monotonic()) / step_s))
    print(f"probe: {step_s * 1000:.0f} ms per step; schedule sized for {total_steps} steps", flush=True)

    def optimizer_factory(module):
        return sf.BF16Optimizer(module, lr=args.lr, max_grad_norm=0.5, warmup_ratio=args.warmup_ratio,
                                lr_scheduler=args.lr_scheduler, total_steps=total_steps)

    backend = sf.FSDPTrainingBackend(sf.ParallelConfig(world_size=1, sharding_strategy="NO_SHARD"),
                                     optimizer_factory=optimizer_factory)
    backend.prepare_model(model, wrap=False, optimizer_target=model.draft_model)
    core = sf.TrainerCore(strategy, backend, accumulation_steps=1)
    runtime = provider.step.bind_runtime(
        cfg, draft, model,
        model_provenance=sf.model_resume_provenance(cfg, draft_config, target.config, capture_layers=capture_layers))
    contract = {"dataset_size": None, "batch_size": args.batch_size, "accumulation_steps": 1, "num_epochs": 1,
                "effective_total_steps": total_steps, "tp_size": 1, "sp_ulysses_size": 1, "sp_ring_size": 1,
                **runtime.resume_contract}
    curve: list[dict] = []
    tokens_per_step = args.batch_size * args.seq_len

    def log(metrics, step):
        sps = metrics.get("perf/global_samples_per_second", 0.0)
        accs = [metrics[f"acc_{i}"] for i in range(args.ttt_length) if f"acc_{i}" in metrics]
        row = {"step": step, "seconds": round(time.monotonic() - t_start, 1), "loss": metrics.get("loss"),
               "acc": metrics.get("acc"), "acc_per_position": accs, "lr": metrics.get("lr"),
               "grad_norm": metrics.get("grad_norm"), "tokens_per_s": sps * args.seq_len}
        curve.append(row)
        print(f"step {step:>6}  loss {row['loss']:.4f}  acc {row['acc']:.3f}  acc/pos "
              f"[{' '.join(f'{a:.2f}' for a in accs)}]  lr {row['lr']:.2e}  {row['tokens_per_s']:,.0f} tok/s",
              flush=True)

    controller = sf.TrainerController(core, run_id=RUN_ID, output_dir=str(out), save_interval=args.save_interval,
                                      log_interval=args.log_interval, max_steps=total_steps, total_steps=total_steps,
                                      num_epochs=1, logger=log, checkpoint_extra=contract)
    parts += ["specforge.training.backend.FSDPTrainingBackend (prepare_model wrap=False)",
              "specforge.optimizer.BF16Optimizer", "specforge.training.controller.TrainerCore.train_step",
              "specforge.training.controller.TrainerController.fit",
              "specforge.algorithms.common.providers.StepProvider.bind_runtime",
              "specforge.training.provenance.model_resume_provenance"]
    t_train = time.monotonic()
    step = controller.fit(_until(batches, deadline))
    _sync(device)
    train_s = time.monotonic() - t_train
    if step == 0:
        raise Fail(f"no optimizer step fit in --minutes={args.minutes}; give more time")
    if controller.last_checkpoint_step != step:  # as Trainer.fit does
        controller.save_checkpoint(step)
    parts += ["specforge.training.controller.TrainerController.save_checkpoint",
              "specforge.training.checkpoint.CheckpointManager.save"]
    ckpt = out / f"{RUN_ID}-step{step}"
    print(f"trained {step} steps in {train_s:.0f}s; saved {ckpt}", flush=True)

    held_out = _evaluate(sf, strategy, target, eval_windows, capture_layers, args.batch_size, device, args.ttt_length)
    print(f"held-out: loss {held_out['loss']:.4f}  acc/pos [{' '.join(f'{a:.2f}' for a in held_out['acc_per_position'])}]",
          flush=True)
    export = None if args.no_export else _export(sf, ckpt, draft_config_path, out / "sglang_export", parts)

    report = {
        "producer": {"package": "specforge", "version": sf.sf_version},
        "parts_used": parts,
        "replaced": replaced + _REPLACED,
        "placeholder_modules": sf.placeholders,
        "environment": _versions(device),
        "command": [sys.executable, *sys.argv],
        "target": {"path": target_path, "vocab_size": target_vocab, "num_hidden_layers": target.config.num_hidden_layers,
                   "hidden_size": target.config.hidden_size},
        "corpus": {"path": str(args.corpus.resolve()), "documents": docs,
                   "tokens": int((len(train_windows) + len(eval_windows)) * args.seq_len),
                   "train_windows": len(train_windows), "eval_windows": len(eval_windows)},
        "draft": {"config": str(draft_config_path), "trainable_parameters": n_params, "draft_vocab_size": args.draft_vocab,
                  "vocab_mapping": str(vm_path), "draft_vocab_covers_loss_tokens": round(coverage, 4),
                  "capture_layers_sglang_numbering": capture_layers, "attention_backend": "sdpa",
                  "ttt_length": args.ttt_length},
        "training": {"steps": step, "scheduled_steps": total_steps, "tokens": step * tokens_per_step,
                     "tokens_per_step": tokens_per_step,
                     "passes_over_corpus": round(step * args.batch_size / len(train_windows), 3), "seq_len": args.seq_len, "batch_size": args.batch_size,
                     "lr": args.lr, "lr_scheduler": args.lr_scheduler, "warmup_ratio": args.warmup_ratio,
                     "seed": args.seed, "minutes_bound": args.minutes, "train_minutes": round(train_s / 60, 3),
                     "wall_minutes_total": round((time.monotonic() - t_start) / 60, 3),
                     "probe_ms_per_step": round(step_s * 1000, 1), "compile": args.compile},
        "loss_curve": {"points": curve, "first": curve[0] if curve else None, "last": curve[-1] if curve else None,
                       "min_loss": min((r["loss"] for r in curve), default=None)},
        "specforge_final_metrics": {k: v for k, v in controller.last_metrics.items() if not k.startswith("perf/")},
        "held_out": held_out,
        "checkpoint": {"dir": str(ckpt), "latest": str(out / f"{RUN_ID}-latest"),
                       "files": sorted(p.name for p in ckpt.iterdir())},
        "sglang_export": export,
    }
    (out / "specforge_train.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'specforge_train.json'}", flush=True)
    if export and "error" in export:
        print(f"error: specforge export --to sglang failed: {export['error']} (the training checkpoint is "
              f"complete: {ckpt})", file=sys.stderr)
        return 3
    return 0


_REPLACED = [
    "target backend: SpecForge 0.2.0 captures target features only through an SGLang server (its in-process "
    "HF backend was removed); the HF LlamaForCausalLM computes the same features (layer outputs at the capture "
    "layers, final normed hidden state) per batch in this process",
    "data pipeline (FeatureStore/FeatureDataLoader, chat templates): plain-text windows of the target's tokens, "
    "every position but the last a loss position, normalized by normalize_offline_sample",
    "Trainer/training.assembly and the pydantic Config: the same parts built one by one; SimpleNamespace carries "
    "the config fields they read",
    "step budget: wall-clock bound; total_steps (schedule and max_steps) sized from a timed probe of "
    f"{PROBE_STEPS} forward/backward passes whose gradients are dropped",
    "attention_backend sdpa instead of SpecForge's default flex_attention; torch.compile off unless --compile",
]


def _target_head(sf, target_path: str, target, device):
    """SpecForge's TargetHead; its weight loader needs ``*.index.json`` and an untied ``lm_head.weight``."""
    import torch

    try:
        return sf.TargetHead.from_pretrained(target_path), "TargetHead.from_pretrained"
    except (FileNotFoundError, KeyError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        head = sf.TargetHead(target_path)
        with torch.no_grad():
            head.fc.weight.copy_(target.get_output_embeddings().weight)
        head.freeze_weights()
        return (head.eval().to(device=device, dtype=torch.bfloat16),
                f"TargetHead(path) given the loaded target's output embedding: from_pretrained refused ({why})")


def _features(sf, target, ids, capture_layers):
    """What SGLang's EAGLE-3 capture gives SpecForge, per sample, laid out as its offline records."""
    import torch

    with torch.no_grad():
        out = target.model(input_ids=ids, output_hidden_states=True)
        aux = torch.cat([out.hidden_states[i + 1] for i in capture_layers], dim=-1)
        final = out.last_hidden_state  # after the final norm, as SGLang's logits processor receives it
    samples = []
    for b in range(ids.shape[0]):
        raw = {"input_ids": ids[b], "loss_mask": torch.ones_like(ids[b]),
               "hidden_state": final[b : b + 1], "aux_hidden_state": aux[b : b + 1]}
        samples.append(sf.normalize_offline_sample(raw, max_len=ids.shape[1]))
    return sf.concatenate_features(samples)


def _check_hidden_states(target, ids, capture_layers) -> None:
    """HF ``hidden_states[i + 1]`` must be layer i's output (SGLang's capture of layer i) on this transformers.

    Raises:
        Fail: it is not (transformers replaces the last entry by the normed state, so i = N-1 cannot be read).
    """
    import torch

    seen: dict[int, torch.Tensor] = {}
    hooks = [target.model.layers[i].register_forward_hook(
        lambda m, a, o, i=i: seen.__setitem__(i, o[0] if isinstance(o, tuple) else o)) for i in capture_layers]
    try:
        with torch.no_grad():
            hs = target.model(input_ids=ids[:1, :16], output_hidden_states=True).hidden_states
    finally:
        for h in hooks:
            h.remove()
    bad = [i for i in capture_layers if not torch.equal(hs[i + 1], seen[i])]
    if bad:
        raise Fail(f"capture layers {bad}: transformers' hidden_states[i + 1] is not layer i's output here "
                   f"({len(hs)} entries for {target.config.num_hidden_layers} layers)")


def _batches(sf, target, windows, capture_layers, batch_size, device, seed):
    """TrainBatches forever (reshuffled each pass), features computed by the target on the fly."""
    import torch

    _check_hidden_states(target, windows[:1].to(device), capture_layers)
    gen = torch.Generator().manual_seed(seed + 1)
    epoch = 0
    while True:
        order = torch.randperm(len(windows), generator=gen)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            tensors = _features(sf, target, windows[idx].to(device, non_blocking=True), capture_layers)
            yield sf.TrainBatch(sample_ids=[f"e{epoch}w{int(i)}" for i in idx], strategy="eagle3",
                                tensors=tensors, metadata={"target_repr": "hidden_state"})
        epoch += 1
        if len(order) < batch_size:
            raise Fail(f"{len(windows)} training windows are fewer than --batch-size={batch_size}")


def _until(batches, deadline: float):
    for batch in batches:
        if time.monotonic() >= deadline:
            return
        yield batch


def _evaluate(sf, strategy, target, windows, capture_layers, batch_size, device, ttt_length) -> dict:
    """SpecForge's per-position metrics (OnlineEagle3Model's) on held-out windows, without gradients."""
    import torch

    model = strategy.trainable_module()
    model.eval()
    correct = torch.zeros(ttt_length)
    denom = torch.zeros(ttt_length)
    losses, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            ids = windows[start : start + batch_size].to(device)
            batch = sf.TrainBatch(sample_ids=[str(start)], strategy="eagle3",
                                  tensors=_features(sf, target, ids, capture_layers),
                                  metadata={"target_repr": "hidden_state"})
            out = strategy.forward_loss(batch)
            correct += torch.stack([c.float().cpu() for c in out.metrics["acc_corrects"]])
            denom += torch.stack([d.float().cpu() for d in out.metrics["acc_denoms"]])
            losses += float(out.loss)
            n += 1
    model.train()
    return {"windows": len(windows), "loss": losses / max(n, 1),
            "acc_per_position": [round(float(c / max(d, 1e-6)), 4) for c, d in zip(correct, denom, strict=True)],
            "what": "OnlineEagle3Model's acc per TTT position (argmax of the draft == argmax of the target, over "
                    "loss tokens) and the strategy's weighted loss, on windows not trained on"}


def _export(sf, ckpt: Path, draft_config: Path, export_dir: Path, parts: list) -> dict:
    """``specforge export --to sglang``: the CLI when it can be imported, else the function it calls."""
    argv = ["--checkpoint", str(ckpt), "--draft-config", str(draft_config), "--output-dir", str(export_dir)]
    command = "specforge export --to sglang " + " ".join(argv)
    try:
        how = _run_export(sf, argv)
    except (Exception, SystemExit) as exc:
        shutil.rmtree(export_dir, ignore_errors=True)
        return {"dir": None, "command": command, "error": f"{type(exc).__name__}: {exc}"}
    parts.append(how)
    print(f"exported {export_dir}", flush=True)
    return {"dir": str(export_dir), "how": how, "command": command,
            "files": sorted(p.name for p in export_dir.iterdir())}


def _run_export(sf, argv: list[str]) -> str:
    if "pydantic" not in sf.placeholders and importlib.util.find_spec("pydantic") is not None:
        from specforge.cli import main as cli_main

        rc = cli_main(["export", "--to", "sglang", *argv])
        how = "specforge.cli.main (specforge export --to sglang)"
    else:
        from specforge.export.to_sglang import main as export_main

        rc = export_main(argv)
        how = "specforge.export.to_sglang.main (the CLI needs pydantic, which is absent)"
    if rc != 0:
        raise RuntimeError(f"it returned {rc}")
    return how


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _versions(device) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    for name in ("specforge", "transformers", "safetensors", "triton", "tokenizers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
