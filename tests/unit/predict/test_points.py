"""Which points a prediction measures first, and which it confirms."""

from __future__ import annotations

from automodel_spec.predict.points import GridPoint, grid_points, measurement_points, select_confirmations

GRID = grid_points([1, 3, 5, 7], [1, 2, 4, 8])


def test_draft_tokens_are_derived_as_spec_derives_them():
    labels = {p.label for p in GRID}
    assert {"1/1/2", "7/1/8", "1/8/9", "3/4/13", "5/4/16", "7/2/15", "7/8/16"} <= labels and len(GRID) == 16


def test_the_longest_chain_the_widest_tree_and_its_shortest_point_come_first():
    assert [p.label for p in measurement_points(GRID)] == ["7/1/8", "7/8/16", "1/8/9"]
    assert [p.label for p in measurement_points(GRID, per_topk=True)] == ["7/1/8", "7/8/16", "7/4/16", "7/2/15",
                                                                           "1/8/9"]
    assert [p.label for p in measurement_points(grid_points([1, 3], [1]))] == ["3/1/4", "1/1/2"]
    assert measurement_points([]) == []


def test_confirmation_prefers_the_point_that_contends_at_most_levels():
    a, b, m = GridPoint(3, 8, 16), GridPoint(5, 8, 16), GridPoint(7, 8, 16)
    measured = {(0.5, 1): {m: 255.0}, (1.0, 1): {m: 235.0}, (0.0, 1): {m: 390.0}}
    predicted = {(0.5, 1): {a: 274.0, b: 277.0, m: 267.0}, (1.0, 1): {a: 250.0, b: 241.0, m: 229.0},
                 (0.0, 1): {a: 300.0, m: 388.0}}
    picks = select_confirmations(predicted, measured, max_points=2)
    assert [c.point for c in picks] == [a, b]  # a is within 3% of the best prediction at two levels
    assert picks[0].levels == ((0.5, 1), (1.0, 1))
    assert select_confirmations(predicted, measured, max_points=1)[0].point == a
    # nothing predicted above the measured best (plus the gain asked for): nothing to confirm
    assert select_confirmations(predicted, measured, max_points=2, min_gain=0.2) == []
