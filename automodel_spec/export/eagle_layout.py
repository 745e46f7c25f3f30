"""EAGLE-1/2: turn a trained draft into what SGLang's ``LlamaForCausalLMEagle`` loads, or refuse.

SGLang's EAGLE draft prefixes every name with ``model.`` itself (a ``model.``-prefixed file loads
nothing), always has a bias on ``fc``, has no ``input_layernorm`` in layer 0 and no final norm, and
takes the embedding and lm_head from the target.
"""

from __future__ import annotations

from automodel_spec.export.draft_plan import DraftPlan, decoder_layer_shapes, selected_token_ids, start_plan
from automodel_spec.io.torch_import import import_torch

ARCHITECTURE = "LlamaForCausalLMEagle"
_FROM_TARGET = dict.fromkeys(("embed_tokens.weight", "lm_head.weight"), "SGLang's EAGLE draft uses the target's")


def plan_eagle(config: dict, tensors: dict, meta: dict | None, *, where: str,
               dtype: tuple[str, str] | None = None) -> DraftPlan:
    """Check an EAGLE-1/2 draft and build the servable config, tensors and optional token map.

    ``dtype`` is ``(dtype, why)``: the dtype the target is served in, to export the draft in.

    Raises:
        CheckpointError: listing every reason the draft would not be served as trained.
    """
    torch = import_torch()

    declared = config.get("draft_num_hidden_layers", config.get("num_hidden_layers"))
    start = start_plan(config, tensors, where=where, architecture=ARCHITECTURE, canonical=_strip_model_prefix,
                       dropped=_FROM_TARGET)
    cfg, named, num_layers, problems, notes = start.cfg, start.named, start.num_layers, start.problems, start.notes
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
    start.check_weights(expected, ARCHITECTURE)
    token_map = _token_map(cfg, meta, problems, notes, torch)
    problems.hint_other_algorithm(named, hidden, 2 * hidden, "EAGLE3", "EAGLE-3")
    problems.raise_if_any()
    return start.finish({n: t.contiguous() for n, t in named.items()}, dtype, token_map=token_map)


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
