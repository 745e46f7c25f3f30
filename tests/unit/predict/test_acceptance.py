"""Accept length of shorter drafts from a longer draft's acceptance histogram."""

from __future__ import annotations

import math
import random

import pytest

from automodel_spec.predict.acceptance import (
    expected_rounds,
    fit_survival,
    interpolate_topk,
    predict_accept_length,
    round_tokens,
    survival,
)


def test_survival_from_counts_of_rounds_by_accepted_drafts():
    assert survival([2, 1, 0, 1]) == [1.0, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError):
        survival([0, 0])


def test_all_accepted_reproduces_the_recorded_all_accept_chains():
    # the H100 grid's T=0 chains (128 tokens): 2.00, 4.00, 5.82, 8.00, the last round cut at 128
    full = survival([0] * 7 + [16])
    assert [round(predict_accept_length(full, s, 128), 2) for s in (1, 3, 5, 7)] == [2.0, 4.0, 5.82, 8.0]


def test_a_chain_cut_shorter_accepts_min_of_k_and_its_steps():
    surv = survival([30, 20, 10, 5, 35])  # K = 0..4
    dist = round_tokens(surv, 2)
    assert dist == pytest.approx({1: 0.3, 2: 0.2, 3: 0.5})
    # without the request's ends, a round emits E[min(K, s) + 1] = 1 + sum_{k<=s} P(K >= k)
    long = predict_accept_length(surv, 2, 100000)
    assert long == pytest.approx(1 + surv[1] + surv[2], rel=1e-3)


def test_the_prediction_matches_a_simulated_shorter_chain():
    """Simulate per-position acceptance (falling with depth), record the 7-step histogram, predict
    the 3-step chain, and compare with a simulation of the 3-step chain on the same positions."""
    rng = random.Random(0)
    p = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]

    def run(steps, n=128, requests=400):
        hist, tokens, rounds = [0] * (steps + 1), 0, 0
        for _ in range(requests):
            t = 1
            while t < n:
                k = 0
                while k < steps and rng.random() < p[k]:
                    k += 1
                hist[k] += 1
                t += k + 1
                rounds += 1
            tokens += n
        return hist, tokens / rounds

    hist7, _ = run(7)
    _, al3 = run(3)
    assert predict_accept_length(survival(hist7), 3, 128) == pytest.approx(al3, rel=0.02)


def test_expected_rounds_counts_the_last_cut_round():
    assert expected_rounds(127, {8: 1.0}) == 16 and expected_rounds(127, {6: 1.0}) == 22
    assert expected_rounds(3, {1: 0.5, 2: 0.5}) == pytest.approx(2.25)


def test_fit_survival_goes_through_every_measured_depth():
    surv = fit_survival([(1, 2.0), (7, 3.19)], 128)
    assert surv[1] == pytest.approx(1.0, abs=1e-6)  # the 1-step point accepted its draft every round
    assert predict_accept_length(surv, 7, 128) == pytest.approx(3.19, abs=1e-3)
    ratios = [surv[j + 1] / surv[j] for j in range(1, 7)]
    assert max(ratios) - min(ratios) < 1e-6  # one rate per depth between the two measured depths


def test_topk_interpolation_is_geometric_in_log_topk():
    s = interpolate_topk((1, [1.0, 0.25]), (4, [1.0, 1.0]), 2)
    assert s == pytest.approx([1.0, 0.5])
    assert interpolate_topk((1, [1.0, 0.25]), (4, [1.0, 1.0]), 4)[1] == pytest.approx(1.0)
    assert math.isclose(interpolate_topk((2, [1.0, 0.5]), (8, [1.0, 0.5]), 4)[1], 0.5)
