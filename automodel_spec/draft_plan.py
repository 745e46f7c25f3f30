"""The result of preflight: what an export writes, and the shared helpers that build it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from automodel_spec.rope import read_rope, write_both_forms

_LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass
class DraftPlan:
    """A draft made servable: the config and tensors to write, and what was changed.

    Attributes:
        config: the normalized ``config.json``.
        tensors: tensors by the names SGLang's loader consumes.
        notes: each change and each default relied on, for the user and the export manifest.
        token_map: 1-D int64 target ids for ``--speculative-token-map`` (EAGLE with a reduced vocab).
        min_sglang: the oldest SGLang release that loads this draft as written.
    """

    config: dict
    tensors: dict
    notes: list[str] = field(default_factory=list)
    token_map: object | None = None
    min_sglang: str = "0.5.9"


class Problems:
    """Collects every reason to refuse a draft, so the user sees them all at once."""

    def __init__(self, where: str):
        self.where = where
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if self.items:
            from automodel_spec.errors import CheckpointError

            lines = "\n".join(f"  - {m}" for m in self.items)
            raise CheckpointError(
                f"the draft at {self.where} cannot be served faithfully ({len(self.items)} problem(s)):\n{lines}"
            )


def rename_tensors(tensors: dict, canonical, problems: Problems) -> dict:
    """Tensors under their canonical names; two names that land on one are reported."""
    named = {}
    for name, t in tensors.items():
        cname = canonical(name)
        if cname in named:
            problems.add(f"two tensors map to {cname} (one of them is {name}); keep one.")
        named[cname] = t
    return named


def set_architecture(cfg: dict, architecture: str, notes: list[str]) -> None:
    """Point ``architectures`` at the class SGLang dispatches on (Llama-based drafts)."""
    if cfg.get("architectures") != [architecture]:
        notes.append(f"architectures {cfg.get('architectures')} -> ['{architecture}'] (SGLang dispatches on it)")
        cfg["architectures"] = [architecture]
    cfg.setdefault("model_type", "llama")


def set_layer_count(cfg: dict, num_layers: int, notes: list[str]) -> None:
    """``num_hidden_layers`` = the layers in the weights (Automodel writes the target's count)."""
    if num_layers and cfg.get("num_hidden_layers") != num_layers:
        notes.append(
            f"num_hidden_layers {cfg.get('num_hidden_layers')} -> {num_layers} (the layers in the weights; "
            "SGLang would otherwise build random extra layers)"
        )
        cfg["num_hidden_layers"] = num_layers


def settle_rope(cfg: dict, problems: Problems, notes: list[str]) -> None:
    """State the draft's rope in the fields every supported SGLang reads (see ``rope``)."""
    try:
        rope, conflicts = read_rope(cfg)
    except (TypeError, ValueError) as exc:
        problems.add(f"config.json's rope settings cannot be read ({exc}); give rope_theta as a number.")
        return
    for conflict in conflicts:
        problems.add(
            f"config.json states two different ropes: {conflict}. transformers 5 and SGLang 0.5.17 read "
            "rope_parameters, older SGLang releases the legacy fields; set both to the rope the draft was "
            "trained with."
        )
    if not conflicts:
        write_both_forms(cfg, rope, notes)


def layer_indices(names) -> list[int]:
    """Sorted distinct decoder-layer indices among canonical names (``layers.N.*``)."""
    return sorted({int(m.group(1)) for n in names if (m := _LAYER.match(n))})


def count_layers(names, problems: Problems) -> int:
    """Number of decoder layers the weights hold; they must be 0..n-1 without gaps."""
    idx = layer_indices(names)
    if not idx:
        problems.add("the weights hold no decoder layer (no layers.N.* / midlayer.* tensors).")
        return 0
    if idx != list(range(len(idx))):
        problems.add(f"decoder layers in the weights are not numbered 0..n-1: {idx}.")
    return len(idx)


_INDEX_TENSORS = {"d2t": "an integer", "t2d": "a boolean"}


def check_values(tensors: dict, problems: Problems) -> None:
    """Weights SGLang would load without a word but that cannot serve as trained.

    Every weight must be floating point and finite (a NaN or inf from a diverged run poisons every
    draft); ``d2t`` / ``t2d`` are index tensors and must be integer / boolean.
    """
    import torch

    for name, t in tensors.items():
        kind = _INDEX_TENSORS.get(name)
        if kind == "an integer" and (t.is_floating_point() or t.dtype == torch.bool):
            problems.add(f"{name} has dtype {t.dtype}; it maps token ids and must be an integer tensor.")
        elif kind is None and not t.is_floating_point():
            problems.add(f"{name} has dtype {t.dtype}; SGLang would cast it to the serving dtype, so a weight "
                         "must be floating point (a quantized or index tensor under a weight's name?).")
        elif kind is None and t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            problems.add(f"{name} holds {bad} NaN or infinite value(s) of {t.numel()}: the training diverged or "
                         "the file is damaged; take an earlier checkpoint.")


def check_shapes(tensors: dict, expected: dict, problems: Problems, label: str) -> None:
    """Compare tensor shapes with what SGLang allocates; report missing, unknown and mis-shaped names."""
    missing = [n for n in expected if n not in tensors]
    unknown = [n for n in tensors if n not in expected]
    if missing:
        problems.add(
            f"{len(missing)} weight(s) that SGLang's {label} loads are missing, so they would stay "
            f"randomly initialized: {_short(missing)}."
        )
    if unknown:
        problems.add(
            f"{len(unknown)} weight name(s) that SGLang's {label} does not know would be skipped "
            f"silently: {_short(unknown)}. Rename them to SGLang's names or retrain/export the draft."
        )
    for name, shape in expected.items():
        t = tensors.get(name)
        if t is not None and tuple(t.shape) != tuple(shape):
            problems.add(f"{name} has shape {list(t.shape)}, SGLang expects {list(shape)} from config.json.")


def _short(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def attention_dims(config: dict) -> tuple[int, int, int, int, int]:
    """hidden, heads, kv heads, head dim, intermediate from a Llama-style config."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config["intermediate_size"])
    return hidden, heads, kv, head_dim, inter


def decoder_layer_shapes(prefix: str, config: dict, in_dim: int, input_norm: bool) -> dict:
    """Shapes of one Llama decoder layer's HF-named tensors (q/k/v split, gate/up split)."""
    hidden, heads, kv, hd, inter = attention_dims(config)
    shapes = {
        f"{prefix}self_attn.q_proj.weight": (heads * hd, in_dim),
        f"{prefix}self_attn.k_proj.weight": (kv * hd, in_dim),
        f"{prefix}self_attn.v_proj.weight": (kv * hd, in_dim),
        f"{prefix}self_attn.o_proj.weight": (hidden, heads * hd),
        f"{prefix}mlp.gate_proj.weight": (inter, hidden),
        f"{prefix}mlp.up_proj.weight": (inter, hidden),
        f"{prefix}mlp.down_proj.weight": (hidden, inter),
        f"{prefix}post_attention_layernorm.weight": (hidden,),
    }
    if input_norm:
        shapes[f"{prefix}input_layernorm.weight"] = (hidden,)
    return shapes
