"""EAGLE-3: turn a trained draft into what SGLang's ``LlamaForCausalLMEagle3`` loads, or refuse.

SGLang skips weight names it does not know and leaves missing ones random, without a word; a
``num_hidden_layers`` copied from the target builds that many random layers; aux layer ids that are
not in ``config.json`` make the draft read the wrong hidden states. Each of these is checked here.
"""

from __future__ import annotations

from packaging.version import Version

from automodel_spec.config.sglang_options import OLDEST_RELEASE
from automodel_spec.export.draft_plan import DraftPlan, decoder_layer_shapes, selected_token_ids, start_plan
from automodel_spec.io.torch_import import import_torch

ARCHITECTURE = "LlamaForCausalLMEagle3"
# Names older SGLang releases (0.5.9 - 0.5.11) use for a one-layer draft; 0.5.12+ reads them too. The
# one table of them: the export reads them here, and the reference (reference.py) maps them as SGLang's loader does.
LEGACY_NAMES = {"midlayer": "layers.0", "aux_norm_low": "fc_norm.0", "aux_norm_mid": "fc_norm.1",
                "aux_norm_high": "fc_norm.2"}
# replaced by the target's at load time
_IGNORED_BY_SGLANG = {"embed_tokens.weight": "SGLang replaces the draft's embedding with the target's"}
DEFAULT_NUM_AUX = 3


def canonical_name(name: str) -> str:
    """``model.midlayer.x`` / ``midlayer.x`` / ``model.layers.0.x`` all become ``layers.0.x``."""
    if name.startswith("model."):
        name = name[len("model."):]
    for old, new in LEGACY_NAMES.items():
        if name.startswith(f"{old}."):
            name = new + name[len(old):]
    return name


def serving_name(name: str, num_layers: int) -> str:
    """The name written to the export: ``midlayer.*`` for one layer, so every supported SGLang loads it."""
    if num_layers == 1 and name.startswith("layers.0."):
        return "midlayer." + name[len("layers.0."):]
    return name


def default_aux_layer_ids(target_layers: int) -> list[int]:
    """Automodel's default capture, which is also SGLang's when no ids are configured.

    The one copy of the rule: ``reference.capture_layers`` reads it (SGLang's numbering adds 1).
    """
    return [1, target_layers // 2 - 1, target_layers - 4]


def plan_eagle3(config: dict, tensors: dict, meta: dict | None, *, where: str,
                aux_layer_ids: list[int] | None = None, aux_source: str = "draft.aux_layer_ids",
                dtype: tuple[str, str] | None = None) -> DraftPlan:
    """Check an EAGLE-3 draft and build the servable config and tensors.

    Args:
        config: the draft's ``config.json``.
        tensors: its weights, by any of the accepted names.
        meta: ``eagle_meta.pt`` contents, if found.
        where: the draft's location, for messages.
        aux_layer_ids: target layers the draft was trained on, overriding the config.
        aux_source: where ``aux_layer_ids`` came from, for the notes.
        dtype: ``(dtype, why)``: the dtype the target is served in, to export the draft in.

    Raises:
        CheckpointError: listing every reason the draft would not be served as trained.
    """
    torch = import_torch()

    start = start_plan(config, tensors, where=where, architecture=ARCHITECTURE, canonical=canonical_name,
                       dropped=_IGNORED_BY_SGLANG)
    cfg, named, num_layers, problems, notes = start.cfg, start.named, start.num_layers, start.problems, start.notes

    hidden = int(cfg["hidden_size"])
    target_hidden = int(cfg.get("target_hidden_size") or hidden)
    vocab = int(cfg["vocab_size"])
    fc = named.get("fc.weight")
    num_aux = _resolve_aux(cfg, fc, target_hidden, aux_layer_ids, aux_source, problems, notes)
    draft_vocab = _resolve_draft_vocab(cfg, named, vocab, notes)
    _resolve_d2t(named, meta, draft_vocab, vocab, problems, notes, torch)

    expected = {"fc.weight": (hidden, num_aux * target_hidden), "norm.weight": (hidden,)}
    if cfg.get("bias"):
        expected["fc.bias"] = (hidden,)
    eagle_config = cfg.get("eagle_config") or {}
    if eagle_config.get("norm_before_fc", cfg.get("norm_before_fc")):
        expected["input_norm.weight"] = (num_aux * target_hidden,)
    if cfg.get("fc_norm") or cfg.get("use_aux_norm"):
        expected.update({f"fc_norm.{i}.weight": (target_hidden,) for i in range(num_aux)})
    for i in range(num_layers):
        expected.update(decoder_layer_shapes(f"layers.{i}.", cfg, 2 * hidden if i == 0 else hidden, True))
        expected[f"layers.{i}.hidden_norm.weight"] = (hidden,)
    if not cfg.get("tie_word_embeddings") and cfg.get("draft_vocab_size") is not None:
        expected["lm_head.weight"] = (draft_vocab, hidden)
    elif "lm_head.weight" in named:
        named.pop("lm_head.weight")
        notes.append("dropped lm_head.weight: with this config SGLang takes the target's lm_head")
    if "d2t" in named:
        expected["d2t"] = (draft_vocab,)
        d2t = named["d2t"]
        if d2t.dim() == 1 and d2t.numel() == draft_vocab:
            target_ids = d2t.to(torch.int64) + torch.arange(draft_vocab, dtype=torch.int64)
            if draft_vocab and (int(target_ids.min()) < 0 or int(target_ids.max()) >= vocab):
                problems.add(f"d2t maps draft ids to target ids outside the vocab [0, {vocab}).")
    if "t2d" in named:
        expected["t2d"] = (vocab,)
    start.check_weights(expected, ARCHITECTURE)
    problems.hint_other_algorithm(named, hidden, hidden, "EAGLE", "EAGLE-1/2")
    problems.raise_if_any()

    min_sglang = _min_sglang(cfg, num_layers, num_aux, expected, notes)
    out = {serving_name(n, num_layers): t.contiguous() for n, t in named.items()}
    return start.finish(out, dtype, min_sglang=min_sglang)


def _min_sglang(cfg: dict, num_layers: int, num_aux: int, expected: dict, notes: list[str]) -> str:
    """The oldest SGLang that reads every part of this draft (older ones skip parts without a word)."""
    needs = {}
    if num_layers > 1:
        needs[f"{num_layers} decoder layers"] = "0.5.12"
    if num_aux != DEFAULT_NUM_AUX:
        needs[f"{num_aux} aux hidden states"] = "0.5.12"
    if any(k.startswith("fc_norm.") for k in expected):
        needs["fc_norm"] = "0.5.12"
    if cfg.get("norm_output"):
        needs["norm_output"] = "0.5.12"
    if "input_norm.weight" in expected:
        needs["norm_before_fc"] = "0.5.17"
    if not needs:
        return OLDEST_RELEASE
    newest = max(needs.values(), key=Version)
    notes.append(f"needs SGLang >= {newest} ({', '.join(f'{k}: {v}' for k, v in needs.items())}); older "
                 "releases would skip or mis-load it")
    return newest


def _resolve_aux(cfg, fc, target_hidden, override, override_source, problems, notes) -> int:
    """Settle the aux layer ids and their count; write them to ``eagle_config`` when known."""
    eagle_config = dict(cfg.get("eagle_config") or {})
    in_config = eagle_config.get("eagle_aux_hidden_state_layer_ids")
    ids = list(override) if override is not None else (list(in_config) if in_config else None)
    if override is not None and in_config and list(in_config) != list(override):
        notes.append(f"aux layer ids {list(in_config)} in config.json replaced by {override_source}={override}")
    num_aux = None
    if fc is not None and fc.dim() == 2 and fc.shape[1] % target_hidden == 0:
        num_aux = fc.shape[1] // target_hidden
    if ids is None:
        if num_aux not in (None, DEFAULT_NUM_AUX):
            problems.add(
                f"fc.weight takes {num_aux} hidden states but no aux layer ids are known; set "
                f"draft.aux_layer_ids=[...] to the {num_aux} target layers the draft was trained on."
            )
        else:
            notes.append("aux layer ids: none recorded; SGLang's default capture (= Automodel's default) is used")
        num_aux = num_aux or DEFAULT_NUM_AUX
    else:
        if num_aux is not None and len(ids) != num_aux:
            problems.add(
                f"{len(ids)} aux layer ids {ids} but fc.weight takes {num_aux} hidden states "
                f"({num_aux}*{target_hidden} inputs); the ids must match the draft's training."
            )
        num_aux = len(ids)
        if in_config != ids:
            eagle_config["eagle_aux_hidden_state_layer_ids"] = ids
            cfg["eagle_config"] = eagle_config
            if override is not None:
                notes.append(f"aux layer ids {ids} from {override_source} written to eagle_config")
    if cfg.get("num_aux_hidden_states") not in (None, num_aux):
        problems.add(f"num_aux_hidden_states={cfg['num_aux_hidden_states']} in config.json but {num_aux} expected.")
    return num_aux


def _resolve_draft_vocab(cfg, named, vocab, notes) -> int:
    head = named.get("lm_head.weight")
    draft_vocab = cfg.get("draft_vocab_size")
    if draft_vocab is None and head is not None and not cfg.get("tie_word_embeddings"):
        draft_vocab = int(head.shape[0])
        cfg["draft_vocab_size"] = draft_vocab
        notes.append(f"draft_vocab_size set to {draft_vocab} (rows of lm_head.weight)")
    return int(draft_vocab if draft_vocab is not None else vocab)


def _resolve_d2t(named, meta, draft_vocab, vocab, problems, notes, torch) -> None:
    """The hot-token map: SGLang maps draft id i to target id ``i + d2t[i]``."""
    selected = selected_token_ids((meta or {}).get("selected_token_ids"), vocab, problems)
    expected = None
    if selected is not None:
        if selected.numel() != draft_vocab:
            problems.add(
                f"eagle_meta.pt selected_token_ids has {selected.numel()} ids but the draft vocab is {draft_vocab}."
            )
        else:
            expected = selected - torch.arange(draft_vocab, dtype=torch.int64)
    d2t = named.get("d2t")
    if d2t is not None:
        # A d2t of the wrong shape is reported by the shape check; comparing it would not broadcast.
        if expected is not None and d2t.shape == expected.shape and not torch.equal(d2t.to(torch.int64), expected):
            bad = int((d2t.to(torch.int64) != expected).sum())
            problems.add(
                f"d2t disagrees with eagle_meta.pt selected_token_ids at {bad} of {draft_vocab} positions; "
                "the weights and the meta file come from different runs."
            )
        if not (d2t.is_floating_point() or d2t.dtype == torch.bool):  # others are refused by check_values
            named["d2t"] = d2t.to(torch.int64)
    elif draft_vocab < vocab:
        if expected is not None:
            named["d2t"] = expected
            notes.append("d2t rebuilt from eagle_meta.pt selected_token_ids")
        else:
            problems.add(
                f"the draft vocab ({draft_vocab}) is smaller than the target's ({vocab}) but there is no d2t "
                "tensor and no eagle_meta.pt with selected_token_ids: SGLang would read draft ids as "
                "target ids. Put eagle_meta.pt beside the checkpoint or add d2t to the weights."
            )
    if "t2d" not in named and meta is not None and meta.get("selected_token_mask") is not None and draft_vocab < vocab:
        named["t2d"] = torch.as_tensor(meta["selected_token_mask"], dtype=torch.bool).flatten()
