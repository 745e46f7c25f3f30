"""EAGLE-1/2: turn a trained draft into what SGLang's ``LlamaForCausalLMEagle`` loads, or refuse.

SGLang's EAGLE draft prefixes every name with ``model.`` itself (a ``model.``-prefixed file loads
nothing), always has a bias on ``fc``, has no ``input_layernorm`` in layer 0 and no final norm, and
takes the embedding and lm_head from the target.
"""

from __future__ import annotations

from automodel_spec.draft_plan import (
    DraftPlan,
    Problems,
    check_shapes,
    check_values,
    count_layers,
    decoder_layer_shapes,
    rename_tensors,
    selected_token_ids,
    set_architecture,
    set_layer_count,
    settle_rope,
)
from automodel_spec.serving_dtype import set_serving_dtype

ARCHITECTURE = "LlamaForCausalLMEagle"
_FROM_TARGET = ("embed_tokens.weight", "lm_head.weight")


def plan_eagle(config: dict, tensors: dict, meta: dict | None, *, where: str,
               dtype: tuple[str, str] | None = None) -> DraftPlan:
    """Check an EAGLE-1/2 draft and build the servable config, tensors and optional token map.

    ``dtype`` is ``(dtype, why)``: the dtype the target is served in, to export the draft in.

    Raises:
        CheckpointError: listing every reason the draft would not be served as trained.
    """
    import torch

    problems = Problems(where)
    notes: list[str] = []
    cfg = dict(config)
    named = rename_tensors(tensors, _strip_model_prefix, problems)
    for name in _FROM_TARGET:
        if named.pop(name, None) is not None:
            notes.append(f"dropped {name}: SGLang's EAGLE draft uses the target's")

    set_architecture(cfg, ARCHITECTURE, notes)
    settle_rope(cfg, problems, notes)
    num_layers = count_layers(named, problems)
    declared = cfg.get("draft_num_hidden_layers", cfg.get("num_hidden_layers"))
    set_layer_count(cfg, num_layers, notes)
    if num_layers and declared not in (None, num_layers):
        problems.add(f"config.json declares {declared} draft layers but the weights hold {num_layers}.")

    hidden = int(cfg["hidden_size"])
    _drop_identity_norm(named, "layers.0.input_layernorm.weight",
                        "SGLang's EAGLE draft has no input_layernorm in layer 0", problems, notes, torch)
    _drop_identity_norm(named, "norm.weight", "SGLang's EAGLE draft has no final norm", problems, notes, torch)
    if "fc.bias" not in named and "fc.weight" in named:
        named["fc.bias"] = torch.zeros(hidden, dtype=named["fc.weight"].dtype)
        notes.append("fc.bias added as zeros: SGLang's fc always has a bias, which would otherwise stay random")

    expected = {"fc.weight": (hidden, 2 * hidden), "fc.bias": (hidden,)}
    for i in range(num_layers):
        expected.update(decoder_layer_shapes(f"layers.{i}.", cfg, hidden, input_norm=i > 0))
    check_shapes(named, expected, problems, ARCHITECTURE)
    check_values(named, problems)
    token_map = _token_map(cfg, meta, problems, notes, torch)
    problems.raise_if_any()
    out = {n: t.contiguous() for n, t in named.items()}
    if dtype is not None:
        out = set_serving_dtype(cfg, out, *dtype, notes)
    return DraftPlan(config=cfg, tensors=out, notes=notes, token_map=token_map)


def _strip_model_prefix(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def _drop_identity_norm(named, name, why, problems, notes, torch) -> None:
    t = named.get(name)
    if t is None:
        return
    named.pop(name)  # reported here either way, not again as an unknown name
    if torch.all(t == 1):
        notes.append(f"dropped {name} (all ones, an identity): {why}")
    else:
        problems.add(f"{name} was trained (not all ones) but {why}; it would be ignored when served.")


def _token_map(cfg, meta, problems, notes, torch):
    vocab = int(cfg["vocab_size"])
    ids = selected_token_ids((meta or {}).get("selected_token_ids"), vocab, problems)
    if ids is None or ids.numel() >= vocab:
        return None
    cfg["hot_vocab_size"] = int(ids.numel())
    notes.append(f"token map of {ids.numel()} hot tokens from eagle_meta.pt (--speculative-token-map)")
    return ids
