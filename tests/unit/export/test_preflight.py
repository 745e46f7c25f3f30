"""Preflight: dispatch by architecture, P-EAGLE refusal, recipe aux ids, draft-vs-target checks."""

from __future__ import annotations

import json

import pytest

from automodel_spec.demo.synthetic import llama_config, write_target
from automodel_spec.draft.draft_sources import find_recipe_aux_layer_ids, read_draft_sources
from automodel_spec.draft.resolve import resolve_draft
from automodel_spec.errors import CheckpointError
from automodel_spec.export.preflight import check_against_target, check_servable_at_all, plan_draft
from automodel_spec.export.target import read_target_config
from automodel_spec.io.json_file import read_json


def _load(ckpt):
    r = resolve_draft(str(ckpt))
    return r, read_draft_sources(r)


# --- P-EAGLE -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch_attr", ["EAGLE3_ARCH", "EAGLE_ARCH"])
def test_p_eagle_refused_with_reason(make_run, kit, arch_attr):
    cfg = kit.eagle3_config()
    cfg.update(parallel_drafting=True, mask_token_id=kit.SHAPE.vocab_size - 1, num_depths=4)
    r, sources = _load(make_run(config=cfg))
    with pytest.raises(CheckpointError) as exc:
        plan_draft(r, getattr(kit, arch_attr), sources, aux_layer_ids=None)
    msg = str(exc.value)
    assert "P-EAGLE" in msg and "parallel_drafting" in msg and "one token per step" in msg


def test_parallel_drafting_false_is_fine(tmp_path):
    check_servable_at_all({"parallel_drafting": False}, tmp_path)
    check_servable_at_all({}, tmp_path)


# --- aux layer ids from the recipe's config.yaml -----------------------------------------------------


def test_aux_ids_read_from_nested_recipe_key(make_run, kit):
    recipe = {"model": {"eagle": {"algorithm": "eagle3", "aux_layer_ids": [2, 4, 6]}}, "step_scheduler": {}}
    ckpt = make_run(recipe=recipe)
    assert find_recipe_aux_layer_ids(ckpt) == [2, 4, 6]

    plan = kit.plan_from_disk(ckpt.parent)

    assert plan.config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [2, 4, 6]
    assert any("config.yaml" in n and "[2, 4, 6]" in n for n in plan.notes)


def test_aux_ids_found_under_a_list(make_run):
    ckpt = make_run(recipe={"callbacks": [{"name": "x"}, {"eagle": {"eagle_aux_hidden_state_layer_ids": [1, 2, 3]}}]})
    assert find_recipe_aux_layer_ids(ckpt) == [1, 2, 3]


def test_explicit_aux_ids_beat_the_recipe(make_run, kit):
    ckpt = make_run(recipe={"model": {"eagle": {"aux_layer_ids": [2, 4, 6]}}})
    plan = kit.plan_from_disk(ckpt, aux_layer_ids=[1, 3, 5])
    assert plan.config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [1, 3, 5]


def test_recipe_without_aux_ids_keeps_defaults(make_run, kit):
    ckpt = make_run(recipe={"model": {"eagle": {"algorithm": "eagle3", "aux_layer_ids": None}}})
    assert find_recipe_aux_layer_ids(ckpt) is None
    assert "eagle_config" not in kit.plan_from_disk(ckpt).config


def test_recipe_aux_ids_that_are_not_ints_refused(make_run):
    ckpt = make_run(recipe={"model": {"eagle": {"aux_layer_ids": ["a", "b"]}}})
    with pytest.raises(CheckpointError, match="not a list of ints"):
        find_recipe_aux_layer_ids(ckpt)


def test_unparsable_recipe_refused(eagle3_ckpt):
    (eagle3_ckpt / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(CheckpointError, match="config.yaml"):
        find_recipe_aux_layer_ids(eagle3_ckpt)


def test_no_recipe(tmp_path):
    assert find_recipe_aux_layer_ids(None) is None
    assert find_recipe_aux_layer_ids(tmp_path) is None


def test_recipe_aux_ids_with_wrong_count_refused(make_run, kit):
    ckpt = make_run(recipe={"model": {"eagle": {"aux_layer_ids": [1, 2, 3, 4]}}})
    with pytest.raises(CheckpointError, match="4 aux layer ids"):
        kit.plan_from_disk(ckpt)


# --- dispatch ----------------------------------------------------------------------------------------------


def test_eagle_checkpoint_dispatches_to_eagle_layout(eagle_ckpt, kit):
    plan = kit.plan_from_disk(eagle_ckpt, kit.EAGLE_ARCH)
    assert plan.config["architectures"] == [kit.EAGLE_ARCH]
    assert "fc.bias" in plan.tensors


def test_aux_ids_for_eagle1_refused(eagle_ckpt, kit):
    with pytest.raises(CheckpointError, match="EAGLE-3"):
        kit.plan_from_disk(eagle_ckpt, kit.EAGLE_ARCH, aux_layer_ids=[1, 2, 3])


def test_unknown_architecture_refused(eagle3_ckpt, kit):
    with pytest.raises(CheckpointError, match="no preflight for architecture LlamaForCausalLM"):
        kit.plan_from_disk(eagle3_ckpt, "LlamaForCausalLM")


def test_read_json_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(CheckpointError, match="JSON object"):
        read_json(tmp_path / "list.json")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_json(tmp_path / "missing.json")


# --- the target's config --------------------------------------------------------------------------------


def test_read_target_config_from_real_target(tmp_path, kit):
    target = write_target(tmp_path / "target", kit.SHAPE, tokenizer=False)
    cfg = read_target_config(str(target))
    assert cfg["hidden_size"] == kit.SHAPE.hidden_size and cfg["num_hidden_layers"] == 8


def test_read_target_config_text_config_and_non_local(tmp_path, monkeypatch):
    d = tmp_path / "vlm"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["X"], "text_config": {"hidden_size": 7}}))
    assert read_target_config(str(d)) == {"hidden_size": 7}
    monkeypatch.chdir(tmp_path)
    assert read_target_config("meta-llama/Llama-3.1-8B-Instruct") is None
    assert read_target_config(None) is None


def _served(kit, **over):
    cfg = llama_config(kit.SHAPE, architectures=[kit.EAGLE3_ARCH], target_hidden_size=kit.SHAPE.hidden_size,
                       num_hidden_layers=1, draft_vocab_size=kit.DRAFT_VOCAB)
    cfg.update(over)
    return cfg


def test_matching_target_passes(tmp_path, kit):
    target = read_target_config(str(write_target(tmp_path / "t", kit.SHAPE, tokenizer=False)))
    check_against_target(_served(kit, eagle_config={"eagle_aux_hidden_state_layer_ids": [1, 3, 6]}), target, "d")


def test_hidden_size_mismatch_reported(kit):
    target = llama_config(kit.SHAPE, hidden_size=128)
    with pytest.raises(CheckpointError) as exc:
        check_against_target(_served(kit), target, "draftdir")
    msg = str(exc.value)
    assert "draftdir" in msg
    assert "target hidden states of size 64" in msg and "hidden_size=128" in msg
    assert "draft hidden_size=64 differs" in msg


def test_target_hidden_size_mismatch_alone_reported(kit):
    """A draft narrower than its target: only target_hidden_size has to match the target."""
    target = llama_config(kit.SHAPE)
    with pytest.raises(CheckpointError, match="target hidden states of size 32"):
        check_against_target(_served(kit, target_hidden_size=32), target, "d")


def test_vocab_mismatch_reported(kit):
    target = llama_config(kit.SHAPE, vocab_size=256)
    with pytest.raises(CheckpointError, match="draft vocab_size=128 but the target's vocab_size=256"):
        check_against_target(_served(kit), target, "d")


@pytest.mark.parametrize("ids,bad", [([1, 3, 7], [7]), ([1, 8, 9], [8, 9])])
def test_too_deep_aux_ids_reported(kit, ids, bad):
    target = llama_config(kit.SHAPE)  # 8 layers: SGLang captures the input of layer id+1, so id <= 6
    with pytest.raises(CheckpointError) as exc:
        check_against_target(_served(kit, eagle_config={"eagle_aux_hidden_state_layer_ids": ids}), target, "d")
    assert f"aux layer ids {bad}" in str(exc.value) and "<= 6" in str(exc.value)


def test_deepest_allowed_aux_id_passes(kit):
    check_against_target(_served(kit, eagle_config={"eagle_aux_hidden_state_layer_ids": [0, 3, 6]}),
                         llama_config(kit.SHAPE), "d")


def test_all_target_mismatches_reported_together(kit):
    target = llama_config(kit.SHAPE, hidden_size=128, vocab_size=256, num_hidden_layers=4)
    draft = _served(kit, eagle_config={"eagle_aux_hidden_state_layer_ids": [1, 2, 3]})
    with pytest.raises(CheckpointError) as exc:
        check_against_target(draft, target, "d")
    msg = str(exc.value)
    assert "4 problem(s)" in msg and "vocab_size" in msg and "aux layer ids [3]" in msg
