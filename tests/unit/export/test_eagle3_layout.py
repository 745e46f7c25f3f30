"""EAGLE-3: a trained Automodel draft becomes what SGLang's LlamaForCausalLMEagle3 loads, or is refused.

Every test writes an Automodel run to disk and plans it from there (resolve -> load -> plan).
"""

from __future__ import annotations

import pytest
import torch

from automodel_spec.errors import CheckpointError
from automodel_spec.export.eagle3_layout import (
    ARCHITECTURE,
    canonical_name,
    default_aux_layer_ids,
    plan_eagle3,
    serving_name,
)

LAYER_PARTS = [
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    "input_layernorm.weight", "hidden_norm.weight", "post_attention_layernorm.weight",
]
SERVED_ONE_LAYER = {f"midlayer.{p}" for p in LAYER_PARTS} | {"fc.weight", "norm.weight", "lm_head.weight",
                                                               "d2t", "t2d"}


def _rename(tensors: dict, old: str, new: str) -> dict:
    return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in tensors.items()}


def _refusal(plan3, **kwargs) -> str:
    with pytest.raises(CheckpointError) as exc:
        plan3(**kwargs)
    return str(exc.value)


def _extra_layer(kit, i: int) -> dict:
    """Tensors of decoder layer ``i`` > 0 (its attention reads the hidden size, not 2x)."""
    s = kit.SHAPE
    h, hd, g = s.hidden_size, s.head_dim, torch.Generator().manual_seed(i)
    shapes = {
        "self_attn.q_proj.weight": (s.num_attention_heads * hd, h),
        "self_attn.k_proj.weight": (s.num_key_value_heads * hd, h),
        "self_attn.v_proj.weight": (s.num_key_value_heads * hd, h),
        "self_attn.o_proj.weight": (h, s.num_attention_heads * hd),
        "mlp.gate_proj.weight": (s.intermediate_size, h),
        "mlp.up_proj.weight": (s.intermediate_size, h),
        "mlp.down_proj.weight": (h, s.intermediate_size),
        "input_layernorm.weight": (h,), "hidden_norm.weight": (h,), "post_attention_layernorm.weight": (h,),
    }
    return {f"model.layers.{i}.{k}": torch.randn(v, generator=g).to(torch.bfloat16) for k, v in shapes.items()}


# --- the normal case ---------------------------------------------------------------------------------


def test_automodel_draft_is_served_with_fixed_config(plan3, kit):
    plan = plan3()
    cfg = plan.config
    assert cfg["architectures"] == [ARCHITECTURE]
    assert cfg["model_type"] == "llama"
    assert cfg["num_hidden_layers"] == 1  # Automodel wrote the target's 8
    assert cfg["draft_vocab_size"] == kit.DRAFT_VOCAB
    assert cfg["hidden_size"] == kit.SHAPE.hidden_size and cfg["vocab_size"] == kit.SHAPE.vocab_size
    assert plan.min_sglang == "0.5.9"
    assert plan.token_map is None
    notes = " | ".join(plan.notes)
    assert "LlamaEagle3DraftModel" in notes and "num_hidden_layers 8 -> 1" in notes


def test_served_names_are_midlayer_for_one_layer_and_values_kept(plan3, kit):
    src = kit.eagle3_tensors()
    plan = plan3(tensors=src)
    assert set(plan.tensors) == SERVED_ONE_LAYER
    assert not any(n.startswith(("model.", "layers.")) for n in plan.tensors)
    for part in LAYER_PARTS:
        assert torch.equal(plan.tensors[f"midlayer.{part}"], src[f"model.layers.0.{part}"]), part
    assert torch.equal(plan.tensors["fc.weight"], src["model.fc.weight"])
    assert torch.equal(plan.tensors["lm_head.weight"], src["lm_head.weight"])
    for t in plan.tensors.values():
        assert t.is_contiguous()


def test_embed_tokens_dropped(plan3, kit):
    src = kit.eagle3_tensors()
    assert "model.embed_tokens.weight" in src
    plan = plan3(tensors=src)
    assert not any("embed_tokens" in n for n in plan.tensors)
    assert any("embed_tokens" in n and "dropped" in n for n in plan.notes)


@pytest.mark.parametrize("layer_prefix", ["model.layers.0.", "layers.0.", "midlayer.", "model.midlayer."])
@pytest.mark.parametrize("strip_model", [False, True])
def test_input_name_variants_normalized(plan3, kit, layer_prefix, strip_model):
    src = _rename(kit.eagle3_tensors(), "model.layers.0.", layer_prefix)
    if strip_model:
        src = _rename(_rename(src, "model.fc.", "fc."), "model.norm.", "norm.")
    plan = plan3(tensors=src)
    assert set(plan.tensors) == SERVED_ONE_LAYER
    assert plan.config["num_hidden_layers"] == 1


def test_aux_norm_legacy_names_become_fc_norm(plan3, kit):
    src = kit.eagle3_tensors()
    h = kit.SHAPE.hidden_size
    for i, level in enumerate(("low", "mid", "high")):
        src[f"aux_norm_{level}.weight"] = torch.full((h,), 1.0 + i)
    cfg = kit.eagle3_config()
    cfg["fc_norm"] = True
    plan = plan3(config=cfg, tensors=src)
    assert {f"fc_norm.{i}.weight" for i in range(3)} <= set(plan.tensors)
    assert torch.all(plan.tensors["fc_norm.2.weight"] == 3.0)
    assert plan.min_sglang == "0.5.12"


def test_fc_norm_enabled_but_missing_is_refused(plan3, kit):
    cfg = kit.eagle3_config()
    cfg["fc_norm"] = True
    msg = _refusal(plan3, config=cfg)
    assert "fc_norm.0.weight" in msg and "missing" in msg


def test_canonical_and_serving_names():
    assert canonical_name("model.layers.0.mlp.up_proj.weight") == "layers.0.mlp.up_proj.weight"
    assert canonical_name("midlayer.hidden_norm.weight") == "layers.0.hidden_norm.weight"
    assert canonical_name("model.midlayer.hidden_norm.weight") == "layers.0.hidden_norm.weight"
    assert canonical_name("aux_norm_mid.weight") == "fc_norm.1.weight"
    assert canonical_name("lm_head.weight") == "lm_head.weight"
    assert serving_name("layers.0.mlp.up_proj.weight", 1) == "midlayer.mlp.up_proj.weight"
    assert serving_name("layers.0.mlp.up_proj.weight", 2) == "layers.0.mlp.up_proj.weight"
    assert serving_name("fc.weight", 1) == "fc.weight"


# --- refusals: every silent mis-load is caught --------------------------------------------------------


def test_missing_weight_refused_and_listed(plan3, kit):
    src = kit.eagle3_tensors()
    del src["model.layers.0.mlp.up_proj.weight"]
    del src["model.norm.weight"]
    msg = _refusal(plan3, tensors=src)
    assert "missing" in msg and "layers.0.mlp.up_proj.weight" in msg and "norm.weight" in msg
    assert "2 weight(s)" in msg


def test_misnamed_weight_refused_and_listed(plan3, kit):
    src = _rename(kit.eagle3_tensors(), "model.layers.0.self_attn.q_proj.", "model.layers.0.attn.q_proj.")
    src["model.extra_head.weight"] = torch.zeros(4)
    msg = _refusal(plan3, tensors=src)
    assert "does not know" in msg
    assert "layers.0.attn.q_proj.weight" in msg and "extra_head.weight" in msg
    assert "layers.0.self_attn.q_proj.weight" in msg  # and the name SGLang wanted is reported missing
    assert "2 problem(s)" in msg  # missing + unknown, reported together


def test_fused_qkv_is_refused(plan3, kit):
    src = kit.eagle3_tensors()
    q, k, v = (src.pop(f"model.layers.0.self_attn.{x}_proj.weight") for x in "qkv")
    src["model.layers.0.self_attn.qkv_proj.weight"] = torch.cat([q, k, v])
    msg = _refusal(plan3, tensors=src)
    assert "qkv_proj" in msg and "q_proj" in msg


@pytest.mark.parametrize("name", ["model.layers.0.mlp.gate_proj.weight", "lm_head.weight",
                                  "model.layers.0.self_attn.k_proj.weight"])
def test_wrong_shape_refused(plan3, kit, name):
    src = kit.eagle3_tensors()
    src[name] = src[name].t().contiguous()
    msg = _refusal(plan3, tensors=src)
    assert canonical_name(name) in msg and "shape" in msg


def test_fc_of_the_wrong_width_refused(plan3, kit):
    src = kit.eagle3_tensors()
    h = kit.SHAPE.hidden_size
    src["model.fc.weight"] = torch.zeros(h, 3 * h + 1, dtype=torch.bfloat16)
    msg = _refusal(plan3, tensors=src)
    assert "fc.weight" in msg and "shape" in msg


def test_duplicate_names_after_normalization_refused(plan3, kit):
    src = kit.eagle3_tensors()
    src["midlayer.hidden_norm.weight"] = src["model.layers.0.hidden_norm.weight"].clone()
    msg = _refusal(plan3, tensors=src)
    assert "two tensors map to layers.0.hidden_norm.weight" in msg


def test_no_decoder_layer_refused(plan3, kit):
    src = {k: v for k, v in kit.eagle3_tensors().items() if not k.startswith("model.layers.")}
    assert "no decoder layer" in _refusal(plan3, tensors=src)


# --- hot-token map (d2t) ------------------------------------------------------------------------------


def test_d2t_kept_and_matches_meta(plan3, kit):
    plan = plan3()
    d2t = plan.tensors["d2t"]
    assert d2t.dtype == torch.int64 and d2t.shape == (kit.DRAFT_VOCAB,)
    # SGLang: hot_token_id = d2t + arange
    assert torch.equal(d2t + torch.arange(kit.DRAFT_VOCAB), kit.selected_ids())
    assert plan.tensors["t2d"].dtype == torch.bool


def test_d2t_disagreeing_with_meta_refused(plan3, kit):
    src = kit.eagle3_tensors()
    src["d2t"] = src["d2t"].clone()
    src["d2t"][3] += 1
    msg = _refusal(plan3, tensors=src)
    assert "d2t disagrees" in msg and f"1 of {kit.DRAFT_VOCAB}" in msg


def test_meta_from_another_run_refused(plan3, kit):
    other = torch.arange(kit.DRAFT_VOCAB) + 7  # a different hot vocabulary than the weights' d2t
    msg = _refusal(plan3, tensors=kit.eagle3_tensors(), selected=other)
    assert "d2t disagrees" in msg


def test_meta_with_wrong_count_refused(plan3, kit):
    msg = _refusal(plan3, tensors=kit.eagle3_tensors(), selected=kit.selected_ids()[:-1])
    assert f"{kit.DRAFT_VOCAB - 1} ids" in msg


def test_d2t_rebuilt_from_meta_when_missing(plan3, kit):
    src = kit.eagle3_tensors()
    del src["d2t"], src["t2d"]
    plan = plan3(tensors=src)
    sel = kit.selected_ids()
    assert torch.equal(plan.tensors["d2t"], sel - torch.arange(kit.DRAFT_VOCAB))
    assert plan.tensors["d2t"].dtype == torch.int64
    mask = torch.zeros(kit.SHAPE.vocab_size, dtype=torch.bool)
    mask[sel] = True
    assert torch.equal(plan.tensors["t2d"], mask)
    assert any("d2t rebuilt" in n for n in plan.notes)


@pytest.mark.parametrize("drop_meta", [False, True], ids=["meta-without-ids", "no-meta-file"])
def test_reduced_vocab_without_d2t_or_meta_refused(plan3, kit, drop_meta):
    src = kit.eagle3_tensors()
    del src["d2t"], src["t2d"]
    msg = _refusal(plan3, tensors=src, selected=None, drop_meta=drop_meta)
    assert "no d2t" in msg and "eagle_meta.pt" in msg


def test_full_vocab_draft_needs_no_d2t(plan3, kit):
    src = kit.eagle3_tensors(selected=None)
    del src["d2t"], src["t2d"]
    src["lm_head.weight"] = torch.zeros(kit.SHAPE.vocab_size, kit.SHAPE.hidden_size, dtype=torch.bfloat16)
    cfg = kit.eagle3_config()
    cfg["draft_vocab_size"] = kit.SHAPE.vocab_size
    plan = plan3(config=cfg, tensors=src, selected=None)
    assert "d2t" not in plan.tensors


def test_draft_vocab_size_taken_from_lm_head_when_unset(plan3, kit):
    cfg = kit.eagle3_config()
    cfg["draft_vocab_size"] = None
    plan = plan3(config=cfg)
    assert plan.config["draft_vocab_size"] == kit.DRAFT_VOCAB
    assert "lm_head.weight" in plan.tensors


# --- aux hidden-state layers ---------------------------------------------------------------------------


def test_default_aux_ids_are_not_written(plan3):
    plan = plan3()
    assert "eagle_config" not in plan.config
    assert any("default capture" in n for n in plan.notes)


def test_default_aux_layer_ids_formula():
    assert default_aux_layer_ids(32) == [1, 15, 28]
    assert default_aux_layer_ids(8) == [1, 3, 4]


def test_custom_aux_ids_written_to_eagle_config(plan3):
    plan = plan3(aux_layer_ids=[2, 4, 6])
    assert plan.config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [2, 4, 6]
    assert any("[2, 4, 6]" in n and "eagle_config" in n for n in plan.notes)
    assert plan.min_sglang == "0.5.9"  # three aux states: every release reads it


def test_override_replaces_ids_in_config_json(plan3, kit):
    cfg = kit.eagle3_config()
    cfg["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": [1, 3, 4], "other": "kept"}
    plan = plan3(config=cfg, aux_layer_ids=[2, 4, 6])
    assert plan.config["eagle_config"] == {"eagle_aux_hidden_state_layer_ids": [2, 4, 6], "other": "kept"}
    assert any("replaced" in n for n in plan.notes)


def test_ids_in_config_json_kept_without_override(plan3, kit):
    cfg = kit.eagle3_config()
    cfg["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": [2, 4, 6]}
    plan = plan3(config=cfg)
    assert plan.config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [2, 4, 6]


def test_four_aux_states_without_ids_refused(plan3, kit):
    msg = _refusal(plan3, tensors=kit.eagle3_tensors(num_aux=4))
    assert "4 hidden states" in msg and "draft.aux_layer_ids" in msg


def test_four_aux_states_with_ids_need_0_5_12(plan3, kit):
    plan = plan3(tensors=kit.eagle3_tensors(num_aux=4), aux_layer_ids=[1, 2, 4, 5])
    assert plan.config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [1, 2, 4, 5]
    assert plan.min_sglang == "0.5.12"
    assert tuple(plan.tensors["fc.weight"].shape) == (kit.SHAPE.hidden_size, 4 * kit.SHAPE.hidden_size)
    assert any("0.5.12" in n and "4 aux" in n for n in plan.notes)


def test_aux_id_count_disagreeing_with_fc_refused(plan3):
    msg = _refusal(plan3, aux_layer_ids=[1, 2, 3, 4])
    assert "4 aux layer ids" in msg and "3 hidden states" in msg


def test_num_aux_hidden_states_disagreeing_refused(plan3, kit):
    cfg = kit.eagle3_config()
    cfg["num_aux_hidden_states"] = 4
    assert "num_aux_hidden_states=4" in _refusal(plan3, config=cfg)


# --- several layers -----------------------------------------------------------------------------------


def test_multi_layer_draft_needs_0_5_12(plan3, kit):
    src = kit.eagle3_tensors()
    src.update(_extra_layer(kit, 1))
    plan = plan3(tensors=src)
    assert plan.config["num_hidden_layers"] == 2
    assert plan.min_sglang == "0.5.12"
    assert "layers.0.self_attn.q_proj.weight" in plan.tensors  # no midlayer.* once there are two
    assert "layers.1.self_attn.q_proj.weight" in plan.tensors
    assert not any(n.startswith("midlayer.") for n in plan.tensors)
    assert any("2 decoder layers" in n for n in plan.notes)


def test_layer_one_with_input_layer_width_refused(plan3, kit):
    src = kit.eagle3_tensors()
    src.update(_rename({k: v.clone() for k, v in src.items() if k.startswith("model.layers.0.")},
                       "model.layers.0.", "model.layers.1."))  # layer 1 attends over 2H inputs: wrong
    msg = _refusal(plan3, tensors=src)
    assert "layers.1.self_attn.q_proj.weight" in msg and "shape" in msg


def test_gap_in_layer_numbers_refused(plan3, kit):
    src = kit.eagle3_tensors()
    src.update(_extra_layer(kit, 2))
    assert "not numbered 0..n-1" in _refusal(plan3, tensors=src)


def test_plan_does_not_mutate_inputs(kit):
    cfg, src = kit.eagle3_config(), kit.eagle3_tensors()
    before_cfg, before_names = dict(cfg), set(src)
    meta = {"selected_token_ids": kit.selected_ids()}
    plan_eagle3(cfg, src, meta, where="mem", aux_layer_ids=[2, 4, 6])
    assert cfg == before_cfg and set(src) == before_names


def test_d2t_of_the_wrong_length_refused(plan3, kit):
    src = kit.eagle3_tensors()
    src["d2t"] = src["d2t"][:-1].clone()
    msg = _refusal(plan3, tensors=src)
    assert "d2t has shape" in msg and f"[{kit.DRAFT_VOCAB}]" in msg


# --- values SGLang would load but that cannot serve as trained ---------------------------------------------


def _with(kit, name, fn):
    t = kit.eagle3_tensors()
    t[name] = fn(t[name])
    return t


@pytest.mark.parametrize(("name", "fn", "message"), [
    ("model.fc.weight", lambda w: w.index_fill(0, torch.tensor([0]), float("nan")), "NaN or infinite"),
    ("model.norm.weight", lambda w: w.index_fill(0, torch.tensor([1]), float("inf")), "NaN or infinite"),
    ("model.norm.weight", lambda w: w.index_fill(0, torch.tensor([1]), float("-inf")), "NaN or infinite"),
    ("model.fc.weight", lambda w: w.bfloat16().index_fill(0, torch.tensor([2]), float("nan")), "NaN or infinite"),
    ("lm_head.weight", lambda w: w.to(torch.int8), "must be floating point"),
    ("d2t", lambda d: d.float(), "must be an integer tensor"),
])
def test_non_finite_or_mistyped_weights_are_refused(plan3, kit, name, fn, message):
    with pytest.raises(CheckpointError, match=message) as exc:
        plan3(tensors=_with(kit, name, fn))
    assert name.removeprefix("model.") in str(exc.value)


@pytest.mark.parametrize(("selected", "message"), [
    (lambda s: torch.cat([s[:-1], s[:1]]), "repeats 1 id"),
    (lambda s: s.double() + 0.5, "integer token ids"),
    (lambda s: s.reshape(2, -1), "1-D"),
])
def test_damaged_selected_token_ids_are_refused_not_used_to_rebuild_d2t(make_run, kit, selected, message):
    tensors = kit.eagle3_tensors()
    tensors.pop("d2t")  # so the meta file would be what d2t is rebuilt from
    ckpt = make_run(tensors=tensors)
    torch.save({"selected_token_ids": selected(kit.selected_ids())}, ckpt / "eagle_meta.pt")
    with pytest.raises(CheckpointError, match=message):
        kit.plan_from_disk(ckpt)
