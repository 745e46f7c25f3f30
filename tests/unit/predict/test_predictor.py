"""Predictions of every grid point at every level from a few measured ones (``predict_grid``).

The measured points are those ``points.measurement_points`` picks (the longest chain, the widest tree at
the most steps, the fewest steps at the widest topk). Checked: a measured point keeps its own accept length;
a shorter chain / tree is predicted from its topk's histogram (or, without one, from a geometric fit,
named as such); a topk between two measured ones is interpolated; what cannot be predicted (deeper than
measured, a topk outside the measured ones) is ``None`` with the reason as its method; tokens/s come from
the cost model of the level's concurrency, and no model means no tokens/s.
"""

from __future__ import annotations

import pytest

from automodel_spec.predict.acceptance import fit_survival, interpolate_topk, predict_accept_length, survival
from automodel_spec.predict.points import GridPoint, grid_points
from automodel_spec.predict.predictor import (
    CHAIN,
    GEOMETRIC,
    INTERPOLATED,
    MEASURED,
    TREE,
    MeasuredLevel,
    predict_grid,
)

TOKENS = 64.0
CHAIN_3 = GridPoint(3, 1, 4)
TREE_3 = GridPoint(3, 4, 13)
TREE_1 = GridPoint(1, 4, 5)
# rounds by accepted drafts K = 0..3: the tree accepts more than the chain at each depth
CHAIN_HIST = (40, 30, 20, 10)
TREE_HIST = (20, 25, 25, 30)


def measured(temperature: float = 0.0, concurrency: int = 1, histograms: bool = True) -> list[MeasuredLevel]:
    """The three points measured first, with accept lengths and speeds a real round model would give."""
    out = []
    for point, hist, tps in ((CHAIN_3, CHAIN_HIST, 120.0), (TREE_3, TREE_HIST, 140.0), (TREE_1, None, 110.0)):
        al = predict_accept_length(survival(list(hist or TREE_HIST)), point.num_steps, TOKENS)
        out.append(MeasuredLevel(point, temperature, concurrency, al, tps * concurrency, TOKENS,
                                 tuple(hist) if hist and histograms else None))
    return out


def by_point(preds, temperature: float = 0.0, concurrency: int = 1) -> dict:
    return {p.point: p for p in preds if (p.temperature, p.concurrency) == (temperature, concurrency)}


def test_every_grid_point_is_predicted_at_every_level_in_order():
    grid = grid_points([1, 2, 3], [1, 2, 4])
    preds, models = predict_grid(grid, measured(1.0, 4) + measured(0.0, 4) + measured(0.0, 1))
    levels = [(p.temperature, p.concurrency) for p in preds]
    assert levels == [(0.0, 1)] * 9 + [(0.0, 4)] * 9 + [(1.0, 4)] * 9  # sorted by (temperature, concurrency)
    assert [p.point for p in preds[:9]] == grid
    assert sorted(models) == [1, 4] and all(m.concurrency == c for c, m in models.items())
    assert models[4].observations == 6  # both temperatures' levels fit the concurrency's one model


def test_a_measured_point_keeps_its_own_accept_length_and_gets_the_models_speed():
    preds, models = predict_grid([CHAIN_3, TREE_3, TREE_1], measured())
    for m in measured():
        p = by_point(preds)[m.point]
        assert (p.accept_length, p.method, p.source) == (m.accept_length, MEASURED, m.point.label)
        # its tokens/s is the model's, so the fit's error can be read beside the predictions
        assert p.tok_per_s == models[1].tok_per_s(m.accept_length, m.point.num_steps, m.point.num_draft_tokens)


def test_a_shorter_chain_and_tree_come_from_their_topks_histogram():
    grid = [GridPoint(1, 1, 2), GridPoint(2, 1, 3), GridPoint(2, 4, 9)]
    preds, models = predict_grid(grid, measured())
    got = by_point(preds)
    for steps in (1, 2):
        chain = got[GridPoint(steps, 1, steps + 1)]
        assert chain.accept_length == pytest.approx(predict_accept_length(survival(list(CHAIN_HIST)), steps, TOKENS))
        assert (chain.method, chain.source) == (CHAIN, "3/1/4")
    tree = got[GridPoint(2, 4, 9)]
    # topk 4's source is its deepest measured point (3/4/13), not the shallow 1/4/5
    assert (tree.method, tree.source) == (TREE, "3/4/13")
    assert tree.accept_length == pytest.approx(predict_accept_length(survival(list(TREE_HIST)), 2, TOKENS))
    assert tree.tok_per_s == pytest.approx(models[1].tok_per_s(tree.accept_length, 2, 9))
    assert got[GridPoint(1, 1, 2)].accept_length < got[GridPoint(2, 1, 3)].accept_length  # deeper accepts more


def test_a_topk_between_two_measured_ones_is_interpolated():
    point = GridPoint(2, 2, 5)
    preds, _ = predict_grid([point], measured())
    p = by_point(preds)[point]
    surv = interpolate_topk((1, survival(list(CHAIN_HIST))), (4, survival(list(TREE_HIST))), 2)
    assert (p.method, p.source) == (INTERPOLATED, "3/1/4 + 3/4/13")
    assert p.accept_length == pytest.approx(predict_accept_length(surv, 2, TOKENS))
    chain = predict_accept_length(survival(list(CHAIN_HIST)), 2, TOKENS)
    tree = predict_accept_length(survival(list(TREE_HIST)), 2, TOKENS)
    assert chain < p.accept_length < tree


@pytest.mark.parametrize(("point", "method"), [
    (GridPoint(5, 1, 6), "not predicted: deeper than the measured 3/1/4"),
    (GridPoint(4, 4, 16), "not predicted: deeper than the measured 3/4/13"),
    (GridPoint(2, 8, 16), "not predicted: no measured topk on both sides"),
])
def test_what_cannot_be_predicted_says_why(point, method):
    preds, _ = predict_grid([point], measured())
    p = by_point(preds)[point]
    assert (p.accept_length, p.tok_per_s, p.method, p.source) == (None, None, method, None)


def test_an_interpolation_is_never_deeper_than_either_measured_topk():
    # topk 1 measured only to 1 step: a 2-step topk-2 point is deeper than that side
    ms = [m for m in measured() if m.point != CHAIN_3]
    ms.append(MeasuredLevel(GridPoint(1, 1, 2), 0.0, 1, 1.6, 100.0, TOKENS, (40, 60)))
    preds, _ = predict_grid([GridPoint(2, 2, 5), GridPoint(1, 2, 3)], ms)
    got = by_point(preds)
    assert got[GridPoint(2, 2, 5)].method == "not predicted: deeper than the measured points"
    assert got[GridPoint(1, 2, 3)].method == INTERPOLATED and got[GridPoint(1, 2, 3)].accept_length is not None


def test_without_histograms_the_accept_lengths_are_fitted_and_named_an_assumption():
    point = GridPoint(2, 1, 3)
    preds, _ = predict_grid([point], measured(histograms=False))
    p = by_point(preds)[point]
    chain = next(m for m in measured() if m.point == CHAIN_3)
    surv = fit_survival([(3, chain.accept_length)], TOKENS)
    assert p.method == GEOMETRIC and p.source == "3/1/4"
    assert p.accept_length == pytest.approx(predict_accept_length(surv, 2, TOKENS))


def test_an_empty_histogram_is_no_histogram():
    ms = [MeasuredLevel(m.point, 0.0, 1, m.accept_length, m.tok_per_s, TOKENS,
                        (0, 0, 0, 0) if m.histogram else None) for m in measured()]
    preds, _ = predict_grid([GridPoint(2, 1, 3)], ms)
    assert by_point(preds)[GridPoint(2, 1, 3)].method == GEOMETRIC


def test_a_failed_measurement_is_neither_a_source_nor_an_observation():
    ms = measured()
    failed = MeasuredLevel(GridPoint(3, 2, 7), 0.0, 1, None, None, TOKENS, None)
    preds, models = predict_grid([GridPoint(3, 2, 7)], [*ms, failed])
    p = by_point(preds)[GridPoint(3, 2, 7)]
    assert p.method == INTERPOLATED  # not "measured": it gave no accept length
    assert models[1].observations == 3


def test_a_concurrency_with_one_measured_level_has_accept_lengths_but_no_speed():
    # the cost model needs two levels; one is not enough to say how fast a round is
    ms = measured(concurrency=1) + [next(m for m in measured(concurrency=8) if m.point == CHAIN_3)]
    preds, models = predict_grid([GridPoint(2, 1, 3)], ms)
    assert sorted(models) == [1]
    p = by_point(preds, concurrency=8)[GridPoint(2, 1, 3)]
    assert p.accept_length is not None and p.method == CHAIN and p.tok_per_s is None
