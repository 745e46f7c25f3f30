"""Predict accept length and tokens/s of every grid point at every level from a few measured points."""

from __future__ import annotations

from dataclasses import dataclass

from automodel_spec.predict.acceptance import (
    fit_survival,
    interpolate_topk,
    predict_accept_length,
    survival,
)
from automodel_spec.predict.cost import CostModel, Observation, fit_cost_model
from automodel_spec.predict.points import GridPoint

MEASURED = "measured"
CHAIN = "chain: histogram"
TREE = "tree: truncated histogram (approximate)"
GEOMETRIC = "fitted to measured accept lengths (no histogram; assumed geometric per depth)"
INTERPOLATED = "topk interpolated between measured topks (assumed)"


@dataclass(frozen=True)
class MeasuredLevel:
    """What one measured point gave at one level."""

    point: GridPoint
    temperature: float
    concurrency: int
    accept_length: float | None
    tok_per_s: float | None
    output_tokens: float
    histogram: tuple[int, ...] | None = None


@dataclass
class Prediction:
    """The prediction for one grid point at one level; ``None`` values say it could not be made (``method``)."""

    point: GridPoint
    temperature: float
    concurrency: int
    accept_length: float | None
    tok_per_s: float | None
    method: str
    source: str | None = None


def predict_grid(grid: list[GridPoint], measured: list[MeasuredLevel]) -> tuple[list[Prediction], dict[int, CostModel]]:
    """Predictions for every grid point at every measured level, and the cost model of each concurrency.

    A measured point is predicted too (its accept length is then its own, its tokens/s the model's),
    so that the model's fit can be read beside its predictions.
    """
    models: dict[int, CostModel] = {}
    for c in sorted({m.concurrency for m in measured}):
        obs = [Observation(m.point.num_steps, m.point.num_draft_tokens, m.accept_length, m.tok_per_s)
               for m in measured if m.concurrency == c and m.accept_length and m.tok_per_s]
        try:
            models[c] = fit_cost_model(c, obs)
        except ValueError:
            continue
    out = []
    for level in sorted({(m.temperature, m.concurrency) for m in measured}):
        here = [m for m in measured if (m.temperature, m.concurrency) == level]
        sources = _sources(here)
        model = models.get(level[1])
        for p in grid:
            al, method, source = _accept(p, here, sources)
            tps = model.tok_per_s(al, p.num_steps, p.num_draft_tokens) if (model and al) else None
            out.append(Prediction(p, level[0], level[1], al, tps, method, source))
    return out, models


def _sources(here: list[MeasuredLevel]) -> dict[int, tuple[MeasuredLevel, list[float], bool]]:
    """Per topk, the deepest measured point with an accept length: (it, its survival, from a histogram?)."""
    by_topk: dict[int, MeasuredLevel] = {}
    for m in here:
        if not m.accept_length:
            continue
        cur = by_topk.get(m.point.topk)
        if cur is None or (m.point.num_steps, m.point.num_draft_tokens) > (cur.point.num_steps, cur.point.num_draft_tokens):
            by_topk[m.point.topk] = m
    out = {}
    for k, m in by_topk.items():
        if m.histogram and sum(m.histogram):
            surv, exact = survival(list(m.histogram)), True
        else:
            anchors = [(o.point.num_steps, o.accept_length) for o in here if o.point.topk == k and o.accept_length]
            surv, exact = fit_survival(anchors, m.output_tokens), False
        out[k] = (m, surv, exact)
    return out


def _accept(p: GridPoint, here: list[MeasuredLevel], sources) -> tuple[float | None, str, str | None]:
    own = next((m for m in here if m.point == p and m.accept_length), None)
    if own is not None:
        return own.accept_length, MEASURED, p.label
    tokens = next(iter(here)).output_tokens if here else 128.0
    if p.topk in sources:
        m, surv, exact = sources[p.topk]
        if p.num_steps > m.point.num_steps:
            return None, f"not predicted: deeper than the measured {m.point.label}", None
        method = (CHAIN if p.is_chain else TREE) if exact else GEOMETRIC
        return predict_accept_length(surv, p.num_steps, m.output_tokens), method, m.point.label
    lower = [k for k in sources if k < p.topk]
    upper = [k for k in sources if k > p.topk]
    if not lower or not upper:
        return None, "not predicted: no measured topk on both sides", None
    (m0, s0, _), (m1, s1, _) = sources[max(lower)], sources[min(upper)]
    if p.num_steps > min(m0.point.num_steps, m1.point.num_steps):
        return None, "not predicted: deeper than the measured points", None
    surv = interpolate_topk((m0.point.topk, s0), (m1.point.topk, s1), p.topk)
    return (predict_accept_length(surv, p.num_steps, tokens), INTERPOLATED,
            f"{m0.point.label} + {m1.point.label}")
