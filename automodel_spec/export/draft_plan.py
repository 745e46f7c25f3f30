"""The result of preflight: what an export writes, and the shared helpers that build it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from automodel_spec.config.sglang_options import OLDEST_RELEASE
from automodel_spec.export.rope import read_rope, write_both_forms
from automodel_spec.export.serving_dtype import set_serving_dtype
from automodel_spec.io.torch_import import import_torch

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
    min_sglang: str = OLDEST_RELEASE


class Problems:
    """Collects every reason to refuse a draft, so the user sees them all at once."""

    def __init__(self, where: str):
        self.where = where
        self.items: list[str] = []

    def add(self, message: str, first: bool = False) -> None:
        """Record a reason; ``first`` puts it at the head (a hint that explains the others)."""
        if first:
            self.items.insert(0, message)
        else:
            self.items.append(message)

    def hint_other_algorithm(self, named: dict, hidden: int, layer0_inputs: int, algorithm: str, layout: str) -> None:
        """Where the draft is already refused and layer 0's attention takes ``layer0_inputs`` features (the
        other algorithm's layout, not this one's), say so first: the likeliest fix is ``algorithm=...``."""
        # SpecForge and speculators name the one layer ``midlayer``; the EAGLE planner keeps that name
        q0 = named.get("layers.0.self_attn.q_proj.weight", named.get("midlayer.self_attn.q_proj.weight"))
        if self.items and q0 is not None and q0.dim() == 2 and int(q0.shape[1]) == layer0_inputs:
            self.add(f"layer 0's attention takes {layer0_inputs} input features ({layer0_inputs // hidden} x "
                     f"hidden_size {hidden}), an {layout} draft's layout: if that is what this is, serve it "
                     f"with algorithm={algorithm}.", first=True)

    def raise_if_any(self) -> None:
        if self.items:
            from automodel_spec.errors import CheckpointError

            lines = "\n".join(f"  - {m}" for m in self.items)
            raise CheckpointError(
                f"the draft at {self.where} cannot be served faithfully ({len(self.items)} problem(s)):\n{lines}"
            )


# Sizes a draft's config.json must state (whole numbers >= 1), and those it may state
_REQUIRED_SIZES = ("hidden_size", "vocab_size", "num_attention_heads", "intermediate_size")
_OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "target_hidden_size", "draft_vocab_size", "num_hidden_layers",
                   "max_position_embeddings")
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
_RESTORE = "restore the config.json the checkpoint was saved with"


def check_sizes(cfg: dict, required, optional, path, problems: Problems) -> None:
    """Each size in ``required`` present, and each size given a whole number >= 1 (JSON ``true`` is not one)."""
    for key in required:
        if cfg.get(key) is None:
            problems.add(f"{key} is missing from {path}; it is a size SGLang builds the model from. Restore the "
                         "config.json the checkpoint was saved with.")
    for key in (*required, *optional):
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            problems.add(f"{key}={value!r} in {path} must be a whole number (an integer JSON value), not "
                         f"{type(value).__name__}; restore the config.json the checkpoint was saved with.")
        elif value < 1:
            problems.add(f"{key}={value} in {path} must be >= 1; restore the config.json the checkpoint was saved with.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_numbers(cfg: dict, path, problems: Problems) -> None:
    """The numbers SGLang builds the draft's layers from (besides the sizes): finite, and in their range.

    JSON reads ``NaN``, ``Infinity`` and ``1e999`` as floats; SGLang would build a norm that divides by
    NaN or a rope of infinite base and serve it without a word (every draft token rejected).
    """
    import math

    def bad(key: str, value, want: str) -> None:
        problems.add(f"{key}={value!r} in {path} must be {want}; {_RESTORE}.")

    eps = cfg.get("rms_norm_eps")
    if eps is not None and not (_is_number(eps) and math.isfinite(eps) and 0 < eps < 1):
        bad("rms_norm_eps", eps, "a finite number between 0 and 1 (the norm's epsilon, e.g. 1e-05)")
    params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    scaling = cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), dict) else {}
    for key, theta in (("rope_theta", cfg.get("rope_theta")), ("rope_parameters.rope_theta", params.get("rope_theta"))):
        if theta is not None and _is_number(theta) and not (math.isfinite(theta) and theta > 0):
            bad(key, theta, "a finite number > 0 (the rope base, e.g. 500000.0)")
    for prefix, group in (("rope_scaling", scaling), ("rope_parameters", params)):
        for k, v in group.items():
            values = v if isinstance(v, list) else [v]
            if k == "rope_theta" or not all(_is_number(x) for x in values):
                continue  # the base is checked above; text is the rope reader's to refuse
            if not all(math.isfinite(x) for x in values):
                bad(f"{prefix}.{k}", v, "finite")
            elif k.endswith("factor") and not isinstance(v, list) and v <= 0:
                bad(f"{prefix}.{k}", v, "> 0 (a scaling factor)")
            elif k == "original_max_position_embeddings" and not (float(v).is_integer() and v >= 1):
                bad(f"{prefix}.{k}", v, "a whole number >= 1")
    for key in _TOKEN_IDS:
        value = cfg.get(key)
        ids = value if isinstance(value, list) else [value]
        # any sign: configs of the original LLaMA carry pad_token_id -1, which SGLang never reads for a draft
        if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            bad(key, value, "a token id: a whole number (or a list of them), or null")
    layer_ids = (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") \
        if isinstance(cfg.get("eagle_config"), dict) else None
    if layer_ids is not None and not (isinstance(layer_ids, list) and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layer_ids)
            and len(set(layer_ids)) == len(layer_ids)):
        bad("eagle_config.eagle_aux_hidden_state_layer_ids", layer_ids, "a list of distinct target layer indices >= 0")
    if "torch_dtype" in cfg or "dtype" in cfg:
        from automodel_spec.export.serving_dtype import unknown_dtype

        named = unknown_dtype(cfg)
        if named is not None:
            problems.add(f"{path} names {named}; {_RESTORE}, or give the dtype its weights hold.")


def check_draft_config(cfg: dict, path) -> None:
    """The sizes the layout checks compute shapes from, and the other numbers SGLang reads, before any is used.

    Raises:
        CheckpointError: a size is missing, not a whole number, < 1, or the heads do not divide evenly;
            a number is not finite or out of its range; the dtype is unknown.
    """
    problems = Problems(str(path))
    check_sizes(cfg, _REQUIRED_SIZES, _OPTIONAL_SIZES, path, problems)
    check_numbers(cfg, path, problems)
    if not problems.items:
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        kv = cfg.get("num_key_value_heads") or heads
        if not cfg.get("head_dim") and hidden % heads:
            problems.add(f"num_attention_heads={heads} does not divide hidden_size={hidden} and there is no "
                         "head_dim: the attention shapes are undefined. Restore the config.json the checkpoint "
                         "was saved with.")
        if heads % kv:
            problems.add(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}: grouped-query "
                         "attention needs whole groups. Restore the config.json the checkpoint was saved with.")
    problems.raise_if_any()


def rename_tensors(tensors: dict, canonical, problems: Problems) -> dict:
    """Tensors under their canonical names; two names that land on one are reported."""
    named = {}
    for name, t in tensors.items():
        cname = canonical(name)
        if cname in named:
            problems.add(f"two tensors map to {cname} (one of them is {name}); keep one.")
        named[cname] = t
    return named


@dataclass
class PlanStart:
    """A draft's config and tensors under SGLang's names, before its layout's own checks.

    Attributes:
        cfg: a copy of the config with the architecture, rope and layer count set.
        named: the tensors by canonical name, those SGLang takes from the target dropped.
        num_layers: the decoder layers the weights hold.
        problems: what already cannot serve (more are added by the layout).
        notes: what was changed so far.
    """

    cfg: dict
    named: dict
    num_layers: int
    problems: Problems
    notes: list[str]

    def check_weights(self, expected: dict, label: str) -> None:
        """The weights against the shapes SGLang allocates from the config, and their values."""
        check_shapes(self.named, expected, self.problems, label)
        check_values(self.named, self.problems)

    def finish(self, tensors: dict, dtype: tuple[str, str] | None, **extra) -> DraftPlan:
        """The plan: ``tensors`` to write, in the serving dtype when one is given (``(dtype, why)``)."""
        if dtype is not None:
            tensors = set_serving_dtype(self.cfg, tensors, *dtype, self.notes)
        return DraftPlan(config=self.cfg, tensors=tensors, notes=self.notes, **extra)


def start_plan(config: dict, tensors: dict, *, where: str, architecture: str, canonical,
               dropped: dict[str, str]) -> PlanStart:
    """What every layout does first: canonical names, tensors SGLang takes from the target dropped
    (``dropped``: name -> why, for the note), then the architecture, rope and layer count set."""
    problems = Problems(where)
    notes: list[str] = []
    cfg = dict(config)
    named = rename_tensors(tensors, canonical, problems)
    for name, why in dropped.items():
        if named.pop(name, None) is not None:
            notes.append(f"dropped {name}: {why}")
    set_architecture(cfg, architecture, notes)
    settle_rope(cfg, problems, notes)
    num_layers = count_layers(named, problems)
    set_layer_count(cfg, num_layers, notes)
    return PlanStart(cfg=cfg, named=named, num_layers=num_layers, problems=problems, notes=notes)


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
    torch = import_torch()

    for name, t in tensors.items():
        kind = _INDEX_TENSORS.get(name)
        if kind == "an integer" and (t.is_floating_point() or t.dtype == torch.bool):
            problems.add(f"{name} has dtype {t.dtype}; it maps token ids and must be an integer tensor.")
        elif kind is None and not t.is_floating_point():
            problems.add(f"{name} has dtype {t.dtype}; SGLang would cast it to the serving dtype, so a weight "
                         "must be floating point (a quantized or index tensor under a weight's name?).")
        elif kind is None and t.numel() and not _all_finite(torch, t):
            bad = int((~torch.isfinite(t)).sum())
            problems.add(f"{name} holds {bad} NaN or infinite value(s) of {t.numel()}: the training diverged or "
                         "the file is damaged; take an earlier checkpoint.")


def _all_finite(torch, t) -> bool:
    """Whether every value of the floating-point tensor ``t`` (not empty) is finite: its least and greatest
    are (``aminmax`` propagates a NaN and keeps an infinity), found in one pass without a temporary.
    ``isfinite(t).all()`` builds a mask as large as ``t`` and, in bfloat16, took ~20x as long (0.08 s
    for a 44 MB draft); a dtype without ``aminmax`` is checked that way still."""
    try:
        low, high = torch.aminmax(t)
    except (RuntimeError, TypeError, NotImplementedError):
        return bool(torch.isfinite(t).all())
    return bool(torch.isfinite(low) & torch.isfinite(high))


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


def selected_token_ids(value, vocab: int, problems: Problems):
    """``eagle_meta.pt``'s hot-token ids as a 1-D int64 tensor, or ``None`` (absent, or refused).

    They must be distinct integer ids within the target vocab: a fractional id would be truncated
    and a repeated one maps two draft tokens to one target token (every draft id to one token, at
    worst), which SGLang loads without a word.
    """
    torch = import_torch()

    if value is None:
        return None
    try:
        ids = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        problems.add(f"eagle_meta.pt selected_token_ids is not a tensor of token ids ({exc}); the meta file is "
                     "damaged: take it from the same checkpoint as the weights.")
        return None
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or ids.dim() != 1:
        problems.add(f"eagle_meta.pt selected_token_ids is a {ids.dim()}-D {ids.dtype} tensor; it must be a "
                     "1-D tensor of integer token ids. The meta file is damaged: take it from the same "
                     "checkpoint as the weights.")
        return None
    ids = ids.to(torch.int64)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        problems.add(f"eagle_meta.pt selected_token_ids fall outside the vocab [0, {vocab}) (min {int(ids.min())}, "
                     f"max {int(ids.max())}): the meta file belongs to another target.")
        return None
    repeats = ids.numel() - torch.unique(ids).numel()
    if repeats:
        problems.add(f"eagle_meta.pt selected_token_ids repeats {repeats} id(s): two draft tokens would map to one "
                     "target token. The meta file is damaged: take it from the same checkpoint as the weights.")
        return None
    return ids
