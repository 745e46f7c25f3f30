"""EAGLE-1/2: a trained draft becomes what SGLang's LlamaForCausalLMEagle loads, or is refused.

SGLang prefixes every name with ``model.`` itself, always biases ``fc``, has no layer-0
input_layernorm and no final norm. Every test writes the run to disk and plans it from there.
"""

from __future__ import annotations

import pytest
import torch

from automodel_spec.errors import CheckpointError
from automodel_spec.export.eagle_layout import ARCHITECTURE, plan_eagle

SERVED = {
    "fc.weight", "fc.bias",
    *(f"layers.0.{p}" for p in ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                                "mlp.down_proj.weight", "post_attention_layernorm.weight")),
}


def _refusal(plan1, **kwargs) -> str:
    with pytest.raises(CheckpointError) as exc:
        plan1(**kwargs)
    return str(exc.value)


def test_automodel_eagle_draft_served_without_model_prefix(plan1, kit):
    src = kit.eagle_tensors()
    plan = plan1(tensors=src)
    assert plan.config["architectures"] == [ARCHITECTURE]
    assert plan.config["num_hidden_layers"] == 1
    assert set(plan.tensors) == SERVED
    assert not any(n.startswith("model.") for n in plan.tensors)
    assert torch.equal(plan.tensors["layers.0.mlp.up_proj.weight"], src["layers.0.mlp.up_proj.weight"])
    assert plan.token_map is None and "hot_vocab_size" not in plan.config
    assert any("LlamaEagleDraftModel" in n for n in plan.notes)


def test_model_prefixed_input_normalized(plan1, kit):
    src = kit.eagle_tensors()
    prefixed = {("model." + k if k != "lm_head.weight" else k): v for k, v in src.items()}
    plan = plan1(tensors=prefixed)
    assert set(plan.tensors) == SERVED
    assert torch.equal(plan.tensors["fc.weight"], src["fc.weight"])


def test_embed_and_lm_head_dropped(plan1, kit):
    src = kit.eagle_tensors()
    src["lm_head.weight"] = torch.zeros(kit.SHAPE.vocab_size, kit.SHAPE.hidden_size)
    plan = plan1(tensors=src)
    assert "embed_tokens.weight" not in plan.tensors and "lm_head.weight" not in plan.tensors
    dropped = [n for n in plan.notes if n.startswith("dropped")]
    assert any("embed_tokens" in n for n in dropped) and any("lm_head" in n for n in dropped)


def test_fc_bias_added_as_zeros(plan1, kit):
    plan = plan1()
    bias = plan.tensors["fc.bias"]
    assert bias.shape == (kit.SHAPE.hidden_size,) and torch.all(bias == 0)
    assert bias.dtype == plan.tensors["fc.weight"].dtype
    assert any("fc.bias added as zeros" in n for n in plan.notes)


def test_trained_fc_bias_kept(plan1, kit):
    src = kit.eagle_tensors()
    src["fc.bias"] = torch.arange(kit.SHAPE.hidden_size, dtype=torch.float32)
    plan = plan1(tensors=src)
    assert torch.equal(plan.tensors["fc.bias"], src["fc.bias"])
    assert not any("fc.bias added" in n for n in plan.notes)


def test_identity_norms_dropped(plan1, kit):
    src = kit.eagle_tensors()
    h = kit.SHAPE.hidden_size
    src["layers.0.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    src["norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    plan = plan1(tensors=src)
    assert set(plan.tensors) == SERVED
    assert sum("all ones" in n for n in plan.notes) == 2


@pytest.mark.parametrize("name", ["layers.0.input_layernorm.weight", "norm.weight", "model.norm.weight"])
def test_trained_norm_refused(plan1, kit, name):
    src = kit.eagle_tensors()
    norm = torch.ones(kit.SHAPE.hidden_size)
    norm[5] = 1.5
    src[name] = norm
    msg = _refusal(plan1, tensors=src)
    assert name.removeprefix("model.") in msg and "trained" in msg


def test_input_layernorm_of_later_layers_is_required(plan1, kit):
    """Only layer 0 lacks input_layernorm in SGLang; layer 1 must bring its own."""
    src = kit.eagle_tensors()
    for k in [k for k in src if k.startswith("layers.0.")]:
        src["layers.1." + k[len("layers.0."):]] = src[k].clone()
    cfg = kit.eagle_config()
    cfg["draft_num_hidden_layers"] = 2
    msg = _refusal(plan1, config=cfg, tensors=src)
    assert "layers.1.input_layernorm.weight" in msg and "missing" in msg
    src["layers.1.input_layernorm.weight"] = torch.ones(kit.SHAPE.hidden_size)
    plan = plan1(config=cfg, tensors=src)
    assert plan.config["num_hidden_layers"] == 2
    assert "layers.1.input_layernorm.weight" in plan.tensors


def test_declared_layer_count_disagreeing_with_weights_refused(plan1, kit):
    cfg = kit.eagle_config()
    cfg["draft_num_hidden_layers"] = 2
    assert "declares 2 draft layers but the weights hold 1" in _refusal(plan1, config=cfg)


def test_missing_and_wrong_shape_refused(plan1, kit):
    src = kit.eagle_tensors()
    del src["layers.0.mlp.up_proj.weight"]
    src["layers.0.mlp.gate_proj.weight"] = src["layers.0.mlp.gate_proj.weight"].t().contiguous()
    msg = _refusal(plan1, tensors=src)
    assert "layers.0.mlp.up_proj.weight" in msg and "layers.0.mlp.gate_proj.weight has shape" in msg
    assert "2 problem(s)" in msg


def test_eagle3_style_fc_refused(plan1, kit):
    src = kit.eagle_tensors()
    h = kit.SHAPE.hidden_size
    src["fc.weight"] = torch.zeros(h, 3 * h)
    assert "fc.weight has shape" in _refusal(plan1, tensors=src)


def test_token_map_from_meta(plan1, kit):
    plan = plan1(selected=kit.selected_ids())
    assert torch.equal(plan.token_map, kit.selected_ids())
    assert plan.token_map.dtype == torch.int64 and plan.token_map.dim() == 1
    assert plan.config["hot_vocab_size"] == kit.DRAFT_VOCAB
    assert any("token map" in n for n in plan.notes)


def test_full_vocab_meta_gives_no_token_map(plan1, kit):
    plan = plan1(selected=torch.arange(kit.SHAPE.vocab_size))
    assert plan.token_map is None and "hot_vocab_size" not in plan.config


def test_token_ids_outside_vocab_refused(kit, tmp_path):
    # In memory: the run writer cannot even build a selected_token_mask from out-of-range ids.
    bad = kit.selected_ids()
    bad[-1] = kit.SHAPE.vocab_size  # one past the end
    with pytest.raises(CheckpointError, match="outside the vocab"):
        plan_eagle(kit.eagle_config(), kit.eagle_tensors(), {"selected_token_ids": bad}, where=str(tmp_path))
