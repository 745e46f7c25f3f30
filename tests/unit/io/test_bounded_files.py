"""Bounded reading of a checkpoint's JSON and YAML, and the path words: what is refused, and what real files keep."""

from __future__ import annotations

import json
import os

import pytest

from automodel_spec.config.rules import number_errors
from automodel_spec.config.schema import ServeConfig
from automodel_spec.config.spec_rules import spec_errors
from automodel_spec.draft.draft_sources import _find_key, find_recipe_aux_layer_ids
from automodel_spec.errors import CheckpointError
from automodel_spec.io.json_file import MAX_DEPTH, nesting_depth, read_json
from automodel_spec.io.path_lookup import file_problem, missing_reason
from automodel_spec.io.yaml_file import read_yaml


def test_json_depth_is_measured_without_recursion_and_strings_do_not_count():
    assert nesting_depth('{"a": [1, {"b": "[[[[{{{{"}], "c": "\\"["}') == 3
    assert nesting_depth("[" * 200_000 + "]" * 200_000) == MAX_DEPTH + 1  # stops counting past the cap


def test_deep_json_is_refused_by_name(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"hidden_size": 64, "x": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(CheckpointError, match=r"config\.json nests more than 64 levels"):
        read_json(p)
    p.write_text(json.dumps({"a": {"b": {"c": [1, 2, {"d": None}]}}}))
    assert read_json(p)["a"]["b"]["c"][2] == {"d": None}


def test_yaml_aliases_a_recipe_uses_are_kept(tmp_path):
    """yaml.safe_dump writes anchors for an object used twice: a recipe may hold them, and serves."""
    import yaml

    shared = {"layers": [1, 3, 4]}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump({"model": {"eagle": shared}, "copy": shared, "aux_layer_ids": [2, 5, 9]}))
    assert "&id001" in p.read_text()
    doc = read_yaml(p, "remedy")
    assert doc["copy"] is doc["model"]["eagle"] and doc["aux_layer_ids"] == [2, 5, 9]
    assert find_recipe_aux_layer_ids(tmp_path) == [2, 5, 9]


@pytest.mark.parametrize(("text", "why"), [
    ("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 12)), "expand to more than 1,000,000"),
    ("a: &a\n  b: *a\n", r"alias \*a refers to a node that contains it"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nests more than 64 levels"),
])
def test_hostile_yaml_is_refused_at_once(tmp_path, text, why):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(CheckpointError, match=why):
        find_recipe_aux_layer_ids(tmp_path)


def test_find_key_visits_a_shared_or_self_containing_object_once():
    leaf = {"x": 1}
    shared = [leaf] * 1000
    tree = {"a": [shared] * 1000}  # 10^6 paths to one leaf
    assert _find_key(tree, ("missing",)) is None
    loop: dict = {"k": None}
    loop["self"] = loop
    assert _find_key(loop, ("missing",)) is None
    assert _find_key({"a": {"b": [{"aux_layer_ids": [1]}]}, "aux_layer_ids": None}, ("aux_layer_ids",)) == [1]


def test_path_words_name_the_cause(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    os.symlink("nowhere", tmp_path / "dangling")
    (tmp_path / "f").write_text("x")
    assert missing_reason(tmp_path / "a").startswith("is a symlink loop")
    assert missing_reason(tmp_path / "dangling").startswith("is a broken symlink to nowhere")
    assert "is a file, not a directory" in missing_reason(tmp_path / "f" / "inside")
    assert missing_reason(tmp_path / "nope") == "does not exist"
    assert file_problem(tmp_path) == "is a directory, not a file"
    assert file_problem(tmp_path / "f") is None


def test_every_float_finite_and_every_int_bounded():
    cfg = ServeConfig()
    cfg.sglang.ready_timeout_s = float("nan")
    cfg.bench.temperature = [0.0, float("inf")]
    cfg.sglang.cuda_graph_max_bs = 2**40
    found = number_errors(cfg)
    assert [e.split("=")[0] for e in found] == ["sglang.cuda_graph_max_bs", "sglang.ready_timeout_s",
                                                "bench.temperature"]
    assert number_errors(ServeConfig()) == []


def test_spec_upper_bounds_say_why():
    from automodel_spec.config.schema import SpecConfig

    (msg,) = spec_errors(SpecConfig(num_steps=10**20, topk=1))
    assert msg.startswith("spec.num_steps=100000000000000000000 is above 64") and "accepted length" in msg
    assert spec_errors(SpecConfig(num_steps=64, topk=4, num_draft_tokens=256)) == []
