"""Build Llama targets and EAGLE drafts offline, in the real file layouts, with controlled agreement.

Nothing can be downloaded where tests and benchmarks run, so they build their own models here:
random weights for layout and lifecycle tests, or the *repeat* construction, in which the target's
decoder layers add nothing to the residual stream and its lm_head equals its embedding (greedy
decoding repeats the last token) while the draft is built to predict the same token: every draft
token is then accepted under greedy decoding. ``logit_scale`` scales the target's lm_head, which
(with sampling temperature) sets how much of the target's probability sits on that token, and so the
accept length. The compute, bytes and kernels are those of the real architecture at the given shape.

``spread`` groups the vocabulary into runs of ``spread`` consecutive ids whose embeddings share most
of their direction (see ``Spread``): the target then puts its sampled probability on the whole group
of the last token, and the draft ranks that same group first, so a tree of ``topk >= spread`` can
be accepted where a chain cannot. Greedy decoding still repeats the last token.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from automodel_spec.demo.synthetic_tokenizer import write_byte_tokenizer
from automodel_spec.draft.resolve import META_NAMES, SAFETENSORS_INDEX
from automodel_spec.io.torch_import import import_native_modules, import_torch


@dataclass(frozen=True)
class LlamaShape:
    """The shape of a Llama target."""

    hidden_size: int = 256
    num_hidden_layers: int = 8
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 688
    vocab_size: int = 512
    max_position_embeddings: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class Spread:
    """Groups of ``size`` consecutive token ids whose logits lie ``gap`` below the repeated token's.

    Each embedding row is ``sqrt(1 - a^2) * center(group) + a * own(id)``; ``a`` is chosen so that a
    group mate's logit is ``gap`` below the repeated token's (at ``logit_scale`` 1), while tokens of
    other groups stay about ``hidden_size * 0.02`` below (~82 at 8B shapes). At temperature T each
    mate then gets ``exp(-gap / T)`` of the repeated token's probability.
    """

    size: int = 1
    gap: float = 1.0


NO_SPREAD = Spread()
TINY = LlamaShape()
LLAMA_3_1_8B = LlamaShape(4096, 32, 32, 8, 14336, 128256, 8192)


def llama_config(shape: LlamaShape, **extra) -> dict:
    """An HF ``config.json`` for a Llama model of this shape."""
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        **{k: v for k, v in asdict(shape).items()}, "head_dim": shape.head_dim,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "attention_bias": False,
    }
    cfg.update(extra)
    return cfg


def _gen(seed: int, device: str):
    torch = import_torch()

    return torch.Generator(device=device).manual_seed(seed)


_STD = 0.02  # every random weight's standard deviation; the spread construction depends on it


def _normal(shape, gen, device, dtype, std=_STD):
    torch = import_torch()

    return torch.empty(shape, device=device, dtype=torch.float32).normal_(0.0, std, generator=gen).to(dtype)


def _embedding(shape: LlamaShape, seed: int, device: str, dtype, spread: Spread = NO_SPREAD):
    own = _normal((shape.vocab_size, shape.hidden_size), _gen(seed, device), device, dtype)
    if spread.size <= 1:
        return own
    torch = import_torch()

    # logit(v | x) ~ E_v . E_x / rms(E_x): hidden * std for v = x, (1 - a^2) of that for a group mate
    a2 = min(spread.gap / (shape.hidden_size * _STD), 1.0)
    groups = -(-shape.vocab_size // spread.size)
    centers = _normal((groups, shape.hidden_size), _gen(seed + 11, device), device, torch.float32)
    ids = torch.arange(shape.vocab_size, device=device) // spread.size
    return ((1 - a2) ** 0.5 * centers[ids] + a2 ** 0.5 * own.float()).to(dtype)


def write_target(out_dir: Path, shape: LlamaShape = TINY, *, repeat: bool = True, logit_scale: float = 1.0,
                 spread: Spread = NO_SPREAD, seed: int = 0, device: str = "cpu", dtype: str = "bfloat16",
                 tokenizer: bool = True, shard_bytes: int = 4 << 30) -> Path:
    """Write an HF Llama target (``config.json`` + safetensors shards + tokenizer).

    Args:
        repeat: zero every layer's ``o_proj`` and ``down_proj`` and set lm_head = embedding, so greedy
            decoding repeats the last token; otherwise every weight is random.
        logit_scale: multiplies lm_head (repeat construction): smaller spreads the target's
            probability beyond the repeated token under sampling.
        spread: token groups that share the target's probability under sampling (``Spread``);
            build the draft with the same value.
    """
    torch = import_torch()

    dt = getattr(torch, dtype)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = _gen(seed + 1, device)
    emb = _embedding(shape, seed, device, dt, spread)
    h, hd, inter = shape.hidden_size, shape.head_dim, shape.intermediate_size

    def tensors():
        yield "model.embed_tokens.weight", emb
        for i in range(shape.num_hidden_layers):
            p = f"model.layers.{i}."
            yield p + "input_layernorm.weight", torch.ones(h, dtype=dt, device=device)
            yield p + "post_attention_layernorm.weight", torch.ones(h, dtype=dt, device=device)
            yield p + "self_attn.q_proj.weight", _normal((shape.num_attention_heads * hd, h), gen, device, dt)
            yield p + "self_attn.k_proj.weight", _normal((shape.num_key_value_heads * hd, h), gen, device, dt)
            yield p + "self_attn.v_proj.weight", _normal((shape.num_key_value_heads * hd, h), gen, device, dt)
            o = (shape.hidden_size, shape.num_attention_heads * hd)
            yield p + "self_attn.o_proj.weight", (torch.zeros(o, dtype=dt, device=device) if repeat
                                                  else _normal(o, gen, device, dt))
            yield p + "mlp.gate_proj.weight", _normal((inter, h), gen, device, dt)
            yield p + "mlp.up_proj.weight", _normal((inter, h), gen, device, dt)
            yield p + "mlp.down_proj.weight", (torch.zeros((h, inter), dtype=dt, device=device) if repeat
                                               else _normal((h, inter), gen, device, dt))
        yield "model.norm.weight", torch.ones(h, dtype=dt, device=device)
        yield "lm_head.weight", (emb * logit_scale).to(dt) if repeat else _normal(emb.shape, gen, device, dt)

    write_sharded_safetensors(out_dir, tensors(), shard_bytes)
    cfg = llama_config(shape, torch_dtype=dtype)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}) + "\n")
    if tokenizer:
        write_byte_tokenizer(out_dir, max_length=shape.max_position_embeddings)
    return out_dir


def write_sharded_safetensors(out_dir: Path, named_tensors, shard_bytes: int) -> None:
    """Write ``model.safetensors`` or, above ``shard_bytes``, shards plus the index, as HF does."""
    import_native_modules()  # safetensors.torch imports torch: with signals held
    from safetensors.torch import save_file

    shards, current, size = [], {}, 0
    for name, t in named_tensors:
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = t.detach().to("cpu").contiguous()
        size += nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def eagle3_draft_tensors(shape: LlamaShape, draft_vocab: int, *, repeat: bool = True, seed: int = 0,
                         device: str = "cpu", dtype: str = "bfloat16", num_aux: int = 3,
                         spread: Spread = NO_SPREAD) -> dict:
    """EAGLE-3 draft tensors under Automodel's names (``model.layers.0.*``, ``model.fc``, ...).

    With ``repeat`` (and a repeat target built from the same ``seed``), fc passes the first captured
    feature through, the layer adds nothing and lm_head holds the target's embedding rows of the hot
    vocabulary (the first ``draft_vocab`` ids), so the draft predicts "repeat the last token".
    """
    torch = import_torch()

    dt = getattr(torch, dtype)
    gen = _gen(seed + 7, device)
    h, hd, inter = shape.hidden_size, shape.head_dim, shape.intermediate_size
    ones = torch.ones(h, dtype=dt, device=device)
    p = "model.layers.0."
    w = {
        p + "self_attn.q_proj.weight": _normal((shape.num_attention_heads * hd, 2 * h), gen, device, dt),
        p + "self_attn.k_proj.weight": _normal((shape.num_key_value_heads * hd, 2 * h), gen, device, dt),
        p + "self_attn.v_proj.weight": _normal((shape.num_key_value_heads * hd, 2 * h), gen, device, dt),
        p + "self_attn.o_proj.weight": _normal((h, shape.num_attention_heads * hd), gen, device, dt),
        p + "mlp.gate_proj.weight": _normal((inter, h), gen, device, dt),
        p + "mlp.up_proj.weight": _normal((inter, h), gen, device, dt),
        p + "mlp.down_proj.weight": _normal((h, inter), gen, device, dt),
        p + "input_layernorm.weight": ones.clone(),
        p + "hidden_norm.weight": ones.clone(),
        p + "post_attention_layernorm.weight": ones.clone(),
        "model.fc.weight": _normal((h, num_aux * h), gen, device, dt),
        "model.norm.weight": ones.clone(),
        "lm_head.weight": _normal((draft_vocab, h), gen, device, dt),
    }
    emb = _embedding(shape, seed, device, dt, spread)
    w["model.embed_tokens.weight"] = emb
    if repeat:
        w[p + "self_attn.o_proj.weight"].zero_()
        w[p + "mlp.down_proj.weight"].zero_()
        fc = torch.zeros((h, num_aux * h), dtype=dt, device=device)
        fc[:, :h] = torch.eye(h, dtype=dt, device=device)
        w["model.fc.weight"] = fc
        w["lm_head.weight"] = emb[:draft_vocab].clone()
    w["d2t"] = torch.zeros(draft_vocab, dtype=torch.int64, device=device)
    t2d = torch.zeros(shape.vocab_size, dtype=torch.bool, device=device)
    t2d[:draft_vocab] = True
    w["t2d"] = t2d
    return w


def automodel_eagle3_config(shape: LlamaShape, draft_vocab: int) -> dict:
    """The draft ``config.json`` as Automodel writes it: the target's, with its layer count kept."""
    return llama_config(
        shape, architectures=["LlamaEagle3DraftModel"], draft_vocab_size=draft_vocab,
        target_hidden_size=shape.hidden_size, fc_norm=False, norm_output=False, parallel_drafting=False,
    )


def write_automodel_run(run_dir: Path, config: dict, tensors: dict, *, step: int = 100, epoch: int = 0,
                        selected_token_ids=None, vocab_size: int | None = None, recipe: dict | None = None,
                        consolidated: bool = True, meta_name: str = META_NAMES[0]) -> Path:
    """Write an Automodel EAGLE run: ``LATEST`` -> ``epoch_E_step_S/{model/[consolidated/], eagle_meta.pt,
    optim/, rng/, config.yaml}``. Returns the checkpoint directory."""
    torch = import_torch()
    import yaml

    run_dir = Path(run_dir)
    ckpt = run_dir / f"epoch_{epoch}_step_{step}"
    model = ckpt / "model"
    hf = model / "consolidated" if consolidated else model
    hf.mkdir(parents=True, exist_ok=True)
    (model / ".hf_metadata").mkdir(exist_ok=True)
    (model / ".hf_metadata" / "config.json").write_text(json.dumps(config) + "\n")
    if consolidated:  # the training (distributed) shards beside consolidated/
        (model / "__0_0.distcp").write_bytes(b"\0" * 64)
    write_sharded_safetensors(hf, tensors.items(), 4 << 30)
    (hf / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for sub in ("optim", "rng"):
        (ckpt / sub).mkdir(exist_ok=True)
        (ckpt / sub / "__0_0.distcp").write_bytes(b"\0" * 16)
    meta = {"global_step": step, "epoch": epoch}
    if selected_token_ids is not None:
        ids = torch.as_tensor(selected_token_ids, dtype=torch.int64).cpu()
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[ids] = True
        meta.update(selected_token_ids=ids, selected_token_mask=mask)
    torch.save(meta, ckpt / meta_name)
    (ckpt / "config.yaml").write_text(yaml.safe_dump(recipe or {"model": {"eagle": {"algorithm": "eagle3"}}}))
    latest = run_dir / "LATEST"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    os.symlink(ckpt.name, latest)
    return ckpt


def eagle_draft_tensors(shape: LlamaShape, *, seed: int = 0, device: str = "cpu", dtype: str = "bfloat16",
                        repeat: bool = True) -> dict:
    """EAGLE-1 draft tensors under Automodel's names (no ``model.`` prefix, no fc bias).

    With ``repeat``, fc passes the token embedding through and the layer adds nothing, so with the
    target's lm_head the draft predicts "repeat the last token".
    """
    torch = import_torch()

    dt = getattr(torch, dtype)
    gen = _gen(seed + 11, device)
    h, hd, inter = shape.hidden_size, shape.head_dim, shape.intermediate_size
    p = "layers.0."
    w = {
        "fc.weight": _normal((h, 2 * h), gen, device, dt),
        p + "self_attn.q_proj.weight": _normal((shape.num_attention_heads * hd, h), gen, device, dt),
        p + "self_attn.k_proj.weight": _normal((shape.num_key_value_heads * hd, h), gen, device, dt),
        p + "self_attn.v_proj.weight": _normal((shape.num_key_value_heads * hd, h), gen, device, dt),
        p + "self_attn.o_proj.weight": _normal((h, shape.num_attention_heads * hd), gen, device, dt),
        p + "mlp.gate_proj.weight": _normal((inter, h), gen, device, dt),
        p + "mlp.up_proj.weight": _normal((inter, h), gen, device, dt),
        p + "mlp.down_proj.weight": _normal((h, inter), gen, device, dt),
        p + "post_attention_layernorm.weight": torch.ones(h, dtype=dt, device=device),
        "embed_tokens.weight": _embedding(shape, seed, device, dt),
    }
    if repeat:
        fc = torch.zeros((h, 2 * h), dtype=dt, device=device)
        fc[:, :h] = torch.eye(h, dtype=dt, device=device)
        w["fc.weight"] = fc
        w[p + "self_attn.o_proj.weight"].zero_()
        w[p + "mlp.down_proj.weight"].zero_()
    return w


def automodel_eagle_config(shape: LlamaShape) -> dict:
    return llama_config(shape, architectures=["LlamaEagleDraftModel"], draft_num_hidden_layers=1)
