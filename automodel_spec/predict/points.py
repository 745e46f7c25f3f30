"""Which grid points a prediction measures first, and which it measures afterwards to confirm.

The grid is steps x topk (draft tokens derived as ``spec.*`` derives them). Measured first:

- the longest chain (most steps, topk 1): its histogram gives every shorter chain's accept length;
- the widest tree at the most steps (or, with ``per_topk``, the longest point of every topk > 1):
  its histogram gives the shorter trees of that topk by truncation, and topks between the measured
  ones by interpolation;
- the fewest steps at the widest topk: a second number of steps and another verify width for the
  cost model, and the setting that high loads favour.

Then the top predicted points that were not measured are measured to confirm them
(``select_confirmations``), and the winner of each level is the best *measured* point.
"""

from __future__ import annotations

from dataclasses import dataclass

from automodel_spec.config.schema import SpecConfig
from automodel_spec.config.spec_rules import draft_tokens


@dataclass(frozen=True, order=True)
class GridPoint:
    """One speculative setting of the grid."""

    num_steps: int
    topk: int
    num_draft_tokens: int

    @property
    def label(self) -> str:
        return f"{self.num_steps}/{self.topk}/{self.num_draft_tokens}"

    @property
    def is_chain(self) -> bool:
        return self.topk == 1


def grid_points(steps: list[int], topks: list[int],
                max_draft_tokens: int = SpecConfig.max_draft_tokens) -> list[GridPoint]:
    """Every steps x topk point of a grid, draft tokens derived as the server's are (``spec_rules.draft_tokens``)."""
    return sorted({GridPoint(s, k, draft_tokens(s, k, max_draft_tokens)) for s in steps for k in topks})


def measurement_points(grid: list[GridPoint], per_topk: bool = False) -> list[GridPoint]:
    """The points a prediction measures first (see the module docstring), in launch order."""
    if not grid:
        return []
    chosen: list[GridPoint] = []
    chains = [p for p in grid if p.is_chain]
    trees = [p for p in grid if not p.is_chain]
    if chains:
        chosen.append(max(chains, key=lambda p: (p.num_steps, p.num_draft_tokens)))
    if trees:
        topks = sorted({p.topk for p in trees}) if per_topk else [max(p.topk for p in trees)]
        for k in reversed(topks):
            of_k = [p for p in trees if p.topk == k]
            chosen.append(max(of_k, key=lambda p: (p.num_steps, p.num_draft_tokens)))
    widest = max(p.topk for p in grid)
    shortest = min((p for p in grid if p.topk == widest), key=lambda p: (p.num_steps, p.num_draft_tokens))
    if shortest.num_steps < max(p.num_steps for p in chosen) and shortest not in chosen:
        chosen.append(shortest)
    return chosen


@dataclass(frozen=True)
class Candidate:
    """An unmeasured point predicted to contend for the best at one or more levels."""

    point: GridPoint
    levels: tuple[tuple[float, int], ...]
    best_gain: float


def select_confirmations(predicted: dict[tuple[float, int], dict[GridPoint, float]],
                         measured: dict[tuple[float, int], dict[GridPoint, float]],
                         max_points: int, min_gain: float = 0.0, tolerance: float = 0.03) -> list[Candidate]:
    """The unmeasured points to measure next.

    At each level, an unmeasured point contends when it is predicted to beat the level's measured
    best by more than ``min_gain`` and comes within ``tolerance`` of the best prediction there
    (predictions that close cannot be told apart by the model: see its fit error). The points that
    contend at the most levels are measured first, then those with the larger predicted gain.

    Args:
        predicted: per level (temperature, concurrency), predicted tokens/s of each grid point.
        measured: per level, measured tokens/s of each point measured so far.
        max_points: at most this many points (one server each).
        min_gain: a predicted gain over the level's measured best at or under this is not worth a server.
        tolerance: how far below the level's best prediction a point still contends.
    """
    wins: dict[GridPoint, list[tuple[tuple[float, int], float]]] = {}
    done = {p for m in measured.values() for p in m}
    for level, preds in predicted.items():
        values = {p: v for p, v in preds.items() if v == v}  # v == v: not NaN
        if not values:
            continue
        best_measured = max(measured.get(level, {}).values(), default=0.0)
        top = max(max(values.values()), best_measured)
        for point, value in values.items():
            if point in done or value <= best_measured * (1 + min_gain) or value < (1 - tolerance) * top:
                continue
            gain = value / best_measured - 1 if best_measured else float("inf")
            wins.setdefault(point, []).append((level, gain))
    order = sorted(wins.items(), key=lambda kv: (-len(kv[1]), -sum(g for _, g in kv[1]), kv[0]))
    return [Candidate(point=p, levels=tuple(lv for lv, _ in ws), best_gain=max(g for _, g in ws))
            for p, ws in order[:max_points]]
