"""Training's per-depth figures, read where the real pair's training scripts write them, and the
reference held against them."""

from __future__ import annotations

import json

import pytest

from automodel_spec.bench.accept_depths import trained_depth_verdict
from automodel_spec.draft.trained_depths import TrainedDepths, read_trained_depths


def test_an_automodel_run_gives_its_measured_chain_survival(tmp_path):
    run = tmp_path / "automodel_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "automodel_train.json").write_text(json.dumps({"tau_sim": 2.1, "chain_survival_per_depth": [0.7, 0.4, 0.2]}))
    for where in (run, run / "checkpoints"):  # the run, or a directory inside it
        got = read_trained_depths(where)
        assert got.survival == [0.7, 0.4, 0.2] and got.how == "chain survival"
        assert got.source == str(run / "automodel_train.json")


def test_a_specforge_run_gives_the_product_of_its_held_out_accuracies(tmp_path):
    run = tmp_path / "specforge_run"
    (run / "sglang_export").mkdir(parents=True)
    (run / "specforge_train.json").write_text(json.dumps({"held_out": {"acc_per_position": [0.8, 0.5, 0.5]}}))
    got = read_trained_depths(run / "sglang_export")
    assert got.survival == pytest.approx([0.8, 0.4, 0.2]) and got.how == "product of per-position accuracies"


@pytest.mark.parametrize("content", ["{not json", json.dumps({"chain_survival_per_depth": None}),
                                     json.dumps({"chain_survival_per_depth": ["x"]}), json.dumps([1, 2])])
def test_a_damaged_or_foreign_file_gives_no_figures(tmp_path, content):
    (tmp_path / "automodel_train.json").write_text(content)
    assert read_trained_depths(tmp_path) is None


def test_no_file_no_figures(tmp_path):
    assert read_trained_depths(tmp_path) is None and read_trained_depths(None) is None


def test_the_reference_is_held_against_training_depth_by_depth():
    trained = TrainedDepths(source="automodel_train.json", survival=[0.8, 0.6, 0.4], how="chain survival")
    ok, text = trained_depth_verdict([0.78, 0.55, 0.36], trained)
    assert ok and "within 20% of training's figures (chain survival, automodel_train.json)" in text
    ok, text = trained_depth_verdict([0.8, 0.3, 0.1], trained)
    assert not ok and "depth 2: 0.30 reference vs 0.60 in training; depth 3: 0.10 reference vs 0.40" in text
    assert "depth 1" not in text
