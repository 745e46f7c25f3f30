"""Time of a speculative round against its shape, fitted from the measured points of a sweep.

At one concurrency ``c``, the time per output token of a level is modelled as

    1 / (tokens/s) = (a + b * steps + d * draft_tokens) / (c * accept_length) + e

``a + b * steps + d * draft_tokens`` is one round of the batch: the verify pass and the round's fixed
cost (``a``), one draft forward per step (``b``) and the verify width (``d``); ``e`` is what each
output token costs on its own (output processing, the tokenizer side), which is why a setting that
accepts more runs longer rounds than one that accepts less at the same shape. Every measured level
(each temperature) is one observation; ``a, b, d, e`` come from a least-squares fit weighted to
relative error. A coefficient the measured shapes cannot separate (all one number of steps, or draft
tokens always ``steps + 1``) is held at 0 and named in ``unidentified``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Observation:
    """One measured level: the shape, what it accepted and how fast it ran."""

    num_steps: int
    num_draft_tokens: int
    accept_length: float
    tok_per_s: float


@dataclass
class CostModel:
    """The fitted model at one concurrency (seconds)."""

    concurrency: int
    intercept_s: float
    per_step_s: float
    per_draft_token_s: float
    per_token_s: float
    observations: int
    rms_relative_error: float
    unidentified: list[str] = field(default_factory=list)

    def round_s(self, num_steps: int, num_draft_tokens: int) -> float:
        return self.intercept_s + self.per_step_s * num_steps + self.per_draft_token_s * num_draft_tokens

    def tok_per_s(self, accept_length: float, num_steps: int, num_draft_tokens: int) -> float:
        per_token = self.round_s(num_steps, num_draft_tokens) / (self.concurrency * accept_length) + self.per_token_s
        return 1.0 / per_token if per_token > 0 else float("nan")


_NAMES = ("intercept_s", "per_step_s", "per_draft_token_s", "per_token_s")


def fit_cost_model(concurrency: int, observations: list[Observation]) -> CostModel:
    """Least-squares fit of the round model at ``concurrency`` (see the module docstring).

    Raises:
        ValueError: fewer than two observations, or none with an accept length and a speed.
    """
    obs = [o for o in observations if o.accept_length and o.accept_length > 0 and o.tok_per_s and o.tok_per_s > 0]
    if len(obs) < 2:
        raise ValueError(f"concurrency {concurrency}: the cost model needs at least two measured levels, "
                         f"got {len(obs)}")
    c = float(concurrency)
    cols = {
        "intercept_s": [1.0 / (c * o.accept_length) for o in obs],
        "per_step_s": [o.num_steps / (c * o.accept_length) for o in obs],
        "per_draft_token_s": [o.num_draft_tokens / (c * o.accept_length) for o in obs],
        "per_token_s": [1.0 for _ in obs],
    }
    y = np.array([1.0 / o.tok_per_s for o in obs])
    unidentified = []
    if len({o.num_steps for o in obs}) < 2:
        unidentified.append("per_step_s")
    shapes = {(o.num_steps, o.num_draft_tokens) for o in obs}
    if len({d - s for s, d in shapes}) < 2:  # draft tokens move with steps only: one slope covers both
        unidentified.append("per_draft_token_s")
    if len({round(o.accept_length, 6) for o in obs}) < 2 and "per_step_s" in unidentified:
        unidentified.append("per_token_s")
    used = [n for n in _NAMES if n not in unidentified]
    x = np.array([cols[n] for n in used]).T
    w = 1.0 / y  # relative error
    coef = _nonnegative_least_squares(x * w[:, None], y * w)
    values = dict.fromkeys(_NAMES, 0.0)
    values.update(zip(used, (float(v) for v in coef), strict=True))
    pred = x @ coef
    rms = float(np.sqrt(np.mean(((pred - y) / y) ** 2)))
    return CostModel(concurrency=concurrency, observations=len(obs), rms_relative_error=rms,
                     unidentified=unidentified, **values)


def _nonnegative_least_squares(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``argmin |x b - y|`` over ``b >= 0``: every coefficient is a time, and an unconstrained fit on noisy
    levels can make one negative (a draft step that saves time, 2026-12-06's real-pair grid), which then
    extrapolates to the settings not measured.

    Written here rather than taken from SciPy (not a dependency) because there are at most four
    coefficients: the optimum is the least-squares fit on one subset of them whose coefficients are all
    non-negative (the others at 0), so every subset is tried and the feasible fit with the smallest
    residual is kept.
    """
    n = x.shape[1]
    best, best_residual = np.zeros(n), float(np.sum(y ** 2))
    for mask in range(1, 2 ** n):
        cols = [j for j in range(n) if mask >> j & 1]
        sub, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if np.any(sub < 0):
            continue
        coef = np.zeros(n)
        coef[cols] = sub
        residual = float(np.sum((x @ coef - y) ** 2))
        if residual < best_residual:
            best, best_residual = coef, residual
    return best
