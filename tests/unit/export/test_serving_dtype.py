"""Serving dtype: the draft is exported in the dtype its target runs in, as SGLang decides it."""

from __future__ import annotations

import pytest
import torch

from automodel_spec.draft.draft_sources import read_draft_sources
from automodel_spec.draft.resolve import resolve_draft
from automodel_spec.errors import ConfigError
from automodel_spec.export.preflight import plan_draft
from automodel_spec.export.serving_dtype import auto_dtype, choose_serving_dtype


@pytest.mark.parametrize(("config", "runs_in"), [
    ({"torch_dtype": "float32"}, "float16"),  # SGLang's (vLLM's) rule for float32 configs
    ({"dtype": "float32"}, "float16"),        # transformers 5 writes `dtype`
    ({}, "float16"),                          # no dtype counts as float32
    ({"torch_dtype": "bfloat16"}, "bfloat16"),
    ({"dtype": "torch.float16"}, "float16"),
])
def test_auto_dtype_follows_sglang(config, runs_in):
    assert auto_dtype(config) == runs_in


def test_explicit_server_dtype_wins():
    assert choose_serving_dtype("bf16", {"torch_dtype": "float16"}) == ("bfloat16", "sglang.dtype=bf16")


def test_target_config_decides_under_auto():
    dtype, why = choose_serving_dtype("auto", {"torch_dtype": "float16"})
    assert dtype == "float16" and "target" in why


def test_without_a_target_bfloat16_is_assumed_and_said():
    dtype, why = choose_serving_dtype(None, None)
    assert dtype == "bfloat16" and "target.path" in why and "sglang.dtype" in why


def test_unknown_server_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match="sglang.dtype=int8"):
        choose_serving_dtype("int8", None)


def test_float32_draft_is_exported_in_the_targets_dtype(make_run, kit):
    """Automodel's way: float32 weights, bfloat16 norms, `dtype: float32` in config.json."""
    cfg = kit.eagle3_config()
    cfg.pop("torch_dtype", None)
    cfg["dtype"] = "float32"
    tensors = {n: t.float() if t.is_floating_point() else t for n, t in kit.eagle3_tensors().items()}
    tensors["model.norm.weight"] = tensors["model.norm.weight"].bfloat16()

    r = resolve_draft(str(make_run(config=cfg, tensors=tensors)))
    plan = plan_draft(r, kit.EAGLE3_ARCH, read_draft_sources(r), aux_layer_ids=None,
                      dtype=("bfloat16", "the target's config.json"))
    assert plan.config["torch_dtype"] == "bfloat16" and plan.config["dtype"] == "bfloat16"
    floats = {t.dtype for t in plan.tensors.values() if t.is_floating_point()}
    assert floats == {torch.bfloat16}
    assert plan.tensors["d2t"].dtype == torch.int64 and plan.tensors["t2d"].dtype == torch.bool
    assert torch.equal(plan.tensors["fc.weight"], tensors["model.fc.weight"].bfloat16())
    assert any("float32 -> bfloat16" in n and "float16" in n for n in plan.notes)
