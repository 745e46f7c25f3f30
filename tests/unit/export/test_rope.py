"""Rope: a draft's rope reaches every supported SGLang the same way; disagreements are named."""

from __future__ import annotations

import pytest

from automodel_spec.demo.synthetic import llama_config
from automodel_spec.errors import CheckpointError
from automodel_spec.export.preflight import check_against_target
from automodel_spec.export.rope import Rope, read_rope

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


def _transformers5(cfg: dict, theta: float = 500000.0, scaling: dict | None = None) -> dict:
    """How transformers 5 writes a config: rope_parameters only, no legacy fields."""
    cfg = {k: v for k, v in cfg.items() if k not in ("rope_theta", "rope_scaling")}
    cfg["rope_parameters"] = {**(scaling or {"rope_type": "default"}), "rope_theta": theta}
    return cfg


def test_transformers5_config_gets_the_legacy_fields_older_sglang_reads(plan3, kit):
    cfg = _transformers5(kit.eagle3_config(), scaling=LLAMA3)
    plan = plan3(config=cfg)
    assert plan.config["rope_theta"] == 500000.0
    assert plan.config["rope_scaling"] == LLAMA3
    assert plan.config["rope_parameters"] == {**LLAMA3, "rope_theta": 500000.0}
    assert any("rope_theta and rope_scaling written" in n and "10000" in n for n in plan.notes)


def test_plain_rope_gets_rope_theta_and_no_scaling(plan3, kit):
    plan = plan3(config=_transformers5(kit.eagle3_config(), theta=1e6))
    assert plan.config["rope_theta"] == 1e6 and plan.config.get("rope_scaling") is None


def test_legacy_config_is_left_as_is(plan3, kit):
    plan = plan3(config=kit.eagle3_config())  # rope_theta only, as transformers 4 writes it
    assert plan.config["rope_theta"] == kit.eagle3_config()["rope_theta"]
    assert "rope_parameters" not in plan.config and not any("rope" in n for n in plan.notes)


def test_old_type_spelling_agrees_with_rope_parameters():
    legacy = {k: v for k, v in LLAMA3.items() if k != "rope_type"} | {"type": "llama3"}
    rope, conflicts = read_rope({"rope_theta": 5e5, "rope_scaling": legacy,
                                 "rope_parameters": {**LLAMA3, "rope_theta": 5e5}})
    assert conflicts == [] and rope == Rope(5e5, LLAMA3)


@pytest.mark.parametrize("legacy", [{"rope_theta": 10000.0}, {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}])
def test_two_different_ropes_in_one_config_are_refused(plan3, kit, legacy):
    cfg = _transformers5(kit.eagle3_config(), scaling=LLAMA3) | legacy
    with pytest.raises(CheckpointError) as exc:
        plan3(config=cfg)
    msg = str(exc.value)
    assert "two different ropes" in msg and "rope_parameters" in msg and next(iter(legacy)) in msg


def test_unreadable_rope_theta_is_a_message_not_a_traceback(plan3, kit):
    with pytest.raises(CheckpointError, match="rope settings cannot be read"):
        plan3(config=kit.eagle3_config() | {"rope_theta": "fast"})


def _served(kit, **over):
    cfg = llama_config(kit.SHAPE, architectures=[kit.EAGLE3_ARCH], target_hidden_size=kit.SHAPE.hidden_size,
                       num_hidden_layers=1, draft_vocab_size=kit.DRAFT_VOCAB)
    return cfg | over


def test_same_rope_in_either_form_gives_no_warning(kit):
    target = _transformers5(llama_config(kit.SHAPE), theta=500000.0)
    assert check_against_target(_served(kit, rope_theta=500000.0), target, "d") == []


def test_rope_differing_from_the_target_is_a_warning_naming_both(kit):
    target = _transformers5(llama_config(kit.SHAPE), theta=500000.0, scaling=LLAMA3)
    warnings = check_against_target(_served(kit, rope_theta=10000.0), target, "d")
    assert len(warnings) == 1
    assert "rope_theta=10000" in warnings[0] and "rope_theta=500000" in warnings[0] and "llama3" in warnings[0]
