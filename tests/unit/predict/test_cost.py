"""The round-time model: fitted from measured levels, predicting others."""

from __future__ import annotations

import numpy as np
import pytest

from automodel_spec.predict.cost import Observation, fit_cost_model


def truth(steps, tokens, al, c=1, a=7e-3, b=0.9e-3, d=0.05e-3, e=0.5e-3):
    return 1.0 / ((a + b * steps + d * tokens) / (c * al) + e)


def test_the_fit_recovers_the_model_it_was_made_from():
    shapes = [(7, 8), (7, 16), (1, 9)]
    obs = [Observation(s, d, al, truth(s, d, al)) for s, d in shapes for al in (1.5, 2.5, 5.0)]
    m = fit_cost_model(1, obs)
    assert m.unidentified == [] and m.rms_relative_error < 1e-9
    assert (m.intercept_s, m.per_step_s, m.per_draft_token_s, m.per_token_s) == pytest.approx(
        (7e-3, 0.9e-3, 0.05e-3, 0.5e-3), rel=1e-6)
    assert m.tok_per_s(3.0, 3, 13) == pytest.approx(truth(3, 13, 3.0))


def test_concurrency_scales_the_round_over_the_batch():
    obs = [Observation(s, d, al, truth(s, d, al, c=8)) for s, d in [(7, 8), (7, 16), (1, 9)] for al in (1.5, 3.0)]
    assert fit_cost_model(8, obs).tok_per_s(2.0, 3, 4) == pytest.approx(truth(3, 4, 2.0, c=8))


def test_what_the_shapes_cannot_separate_is_named_not_guessed():
    chains = [Observation(s, s + 1, al, truth(s, s + 1, al)) for s in (1, 7) for al in (1.5, 3.0)]
    m = fit_cost_model(1, chains)
    assert m.unidentified == ["per_draft_token_s"] and m.per_draft_token_s == 0.0
    # chains alone still predict chains: draft tokens move with steps
    assert m.tok_per_s(2.0, 3, 4) == pytest.approx(truth(3, 4, 2.0), rel=1e-6)
    one_shape = [Observation(7, 8, al, truth(7, 8, al)) for al in (1.5, 3.0)]
    assert "per_step_s" in fit_cost_model(1, one_shape).unidentified
    with pytest.raises(ValueError, match="at least two measured levels"):
        fit_cost_model(1, one_shape[:1])


def test_no_cost_is_fitted_below_zero_where_noise_would_pull_it_there():
    # levels made with no per-step cost, then the longer chains measured 15% fast (noise): an unconstrained
    # fit makes a draft step save time, and would predict 9 steps faster than the 7 measured
    obs = [Observation(s, s + 4, al, truth(s, s + 4, al, b=0.0) * (1.15 if s == 7 else 1.0))
           for s in (1, 7) for al in (1.5, 2.5, 4.0)]
    obs += [Observation(3, 16, al, truth(3, 16, al, b=0.0)) for al in (1.5, 4.0)]
    m = fit_cost_model(1, obs)
    assert min(m.intercept_s, m.per_step_s, m.per_draft_token_s, m.per_token_s) >= 0.0
    assert m.per_step_s == 0.0
    assert m.tok_per_s(2.0, 9, 13) <= m.tok_per_s(2.0, 7, 11)
    # what the unconstrained fit would have given: a step of negative cost
    c = [[1 / o.accept_length, o.num_steps / o.accept_length, o.num_draft_tokens / o.accept_length, 1.0] for o in obs]
    y = np.array([1 / o.tok_per_s for o in obs])
    free, *_ = np.linalg.lstsq(np.array(c) * (1 / y)[:, None], np.ones_like(y), rcond=None)
    assert free[1] < 0
