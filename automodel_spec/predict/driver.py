"""The predict sweep without Hydra: measure a few points, predict the grid, confirm the top predictions.

``run_predict_sweep`` drives it through a ``launch`` callable that runs a batch of jobs (each a list of
``recipes/serve.py`` overrides) and returns each job's ``PointResult``: the Hydra sweeper
(``hydra_plugins.automodel_spec_predict_sweeper``) launches them through the configured launcher,
``scripts/analysis/replay_predict.py`` looks them up in a recorded grid. Steps:

1. measure ``measurement_points`` of the grid (one server each);
2. predict every grid point at every level (``predictor.predict_grid``), write ``predictions.json``;
3. measure the confirmation points (``points.select_confirmations``), within ``max_gpu_s`` if set;
4. measure the extra points (``also``: SGLang's own choice, its adaptive mode, ...);
5. where the fastest chain changes with load, write the adaptive config that encodes it and, if
   asked and the budget allows, measure it.

The winner of each level is the best *measured* point; ``predictions.json`` keeps what was
predicted before the confirmations ran, so their error is an out-of-sample one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from automodel_spec.bench.result import PointResult, json_safe
from automodel_spec.config.adaptive import write_adaptive_config
from automodel_spec.io.atomic_write import write_json_atomically
from automodel_spec.predict.cost import CostModel
from automodel_spec.predict.points import (
    Candidate,
    GridPoint,
    measurement_points,
    select_confirmations,
)
from automodel_spec.predict.predictor import MeasuredLevel, Prediction, predict_grid

PREDICTIONS = "predictions.json"
ADAPTIVE_CONFIG = "adaptive_chains.json"

Launch = Callable[[list[list[str]]], list[PointResult | None]]


@dataclass
class PredictOptions:
    """How much the predict sweep measures.

    Attributes:
        per_topk: measure the longest point of every topk (else only the widest tree's).
        confirm: at most this many confirmation points.
        min_gain: confirm a point only when predicted to beat the level's measured best by more.
        max_gpu_s: stop launching confirmations and extras once the points' GPU seconds (the
            shared baseline's included) would pass this; ``None``: no budget.
        also: extra points, each a list of overrides (e.g. ``["spec.adaptive=true"]``).
        measure_adaptive: measure the adaptive config written where the fastest chain changes with load.
    """

    per_topk: bool = False
    confirm: int = 1
    min_gain: float = 0.0
    max_gpu_s: float | None = None
    also: list[list[str]] = field(default_factory=list)
    measure_adaptive: bool = False


def option_errors(options: PredictOptions) -> list[str]:
    """What is wrong with the predict sweeper's options (``hydra.sweeper.*``), each named with its value."""
    errors = []
    if isinstance(options.confirm, bool) or not isinstance(options.confirm, int) or options.confirm < 0:
        errors.append(f"hydra.sweeper.confirm={options.confirm} must be a whole number >= 0 (the confirmation "
                      "points measured at most; 0 measures none).")
    if not (math.isfinite(options.min_gain) and options.min_gain >= -1):
        errors.append(f"hydra.sweeper.min_gain={options.min_gain} must be a finite fraction >= -1 (0.02: confirm a "
                      "point predicted to beat the measured best by more than 2%; -1: whatever it is predicted).")
    if options.max_gpu_s is not None and not (isinstance(options.max_gpu_s, int | float)
                                              and math.isfinite(options.max_gpu_s) and options.max_gpu_s > 0):
        errors.append(f"hydra.sweeper.max_gpu_s={options.max_gpu_s} must be a number of GPU seconds > 0, or null "
                      "for no budget.")
    return errors


@dataclass
class PredictOutcome:
    """What a predict sweep did and found."""

    grid: list[GridPoint]
    first: list[GridPoint]
    predictions: list[Prediction]
    models: dict[int, CostModel]
    confirmations: list[Candidate]
    results: dict[GridPoint, PointResult]
    extras: list[tuple[list[str], PointResult | None]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    adaptive_config: str | None = None
    gpu_seconds: float = 0.0


def point_overrides(p: GridPoint) -> list[str]:
    """The overrides of a grid point (draft tokens derived: the same point names a grid sweep uses)."""
    return [f"spec.num_steps={p.num_steps}", f"spec.topk={p.topk}"]


def measured_levels(point: GridPoint, result: PointResult) -> list[MeasuredLevel]:
    """A measured point's levels as the predictor reads them: the closed-loop levels (its cost model is per
    concurrency; open-loop levels and phases are reported, not predicted)."""
    out = []
    for lv in result.levels.values():
        if lv.request_rate is not None or lv.phase is not None:
            continue
        done = lv.requests - lv.failed_requests
        tokens = lv.output_tokens / done if done else 0.0
        out.append(MeasuredLevel(point, lv.temperature, lv.concurrency, lv.accept_length, lv.output_tok_per_s,
                                 tokens, tuple(lv.accept_histogram) if lv.accept_histogram else None))
    return out


def run_predict_sweep(grid: list[GridPoint], options: PredictOptions, launch: Launch,
                      sweep_dir: Path | None = None, baseline_s: Callable[[], float] = lambda: 0.0) -> PredictOutcome:
    """Measure, predict, confirm (see the module docstring).

    Args:
        grid: every point of the grid.
        options: how much to measure.
        launch: runs a batch of jobs and returns their results (``None`` for a job that wrote none).
        sweep_dir: where ``predictions.json`` and the adaptive config go (``None``: nowhere).
        baseline_s: the shared baseline's GPU seconds so far (counted against ``max_gpu_s``).
    """
    first = measurement_points(grid, per_topk=options.per_topk)
    results: dict[GridPoint, PointResult] = {}
    _run(first, launch, results)
    preds, models = predict_grid(grid, _levels(results))
    predicted = _by_level({(p.point, p.temperature, p.concurrency): p.tok_per_s for p in preds})
    measured = _by_level({(p, lv.temperature, lv.concurrency): lv.output_tok_per_s
                          for p, r in results.items() for lv in r.levels.values() if _closed_loop(lv)})
    picks = select_confirmations(predicted, measured, options.confirm, options.min_gain)
    outcome = PredictOutcome(grid=grid, first=first, predictions=preds, models=models, confirmations=picks,
                             results=results)
    if sweep_dir is not None:
        write_predictions(Path(sweep_dir), outcome)
    spent = lambda: sum(r.gpu_seconds or 0.0 for r in results.values()) + baseline_s() + sum(  # noqa: E731
        (r.gpu_seconds or 0.0) for _, r in outcome.extras if r is not None)
    for c in picks:
        if not _affordable(options, spent(), results):
            outcome.skipped.append(f"confirmation {c.point.label}: the GPU budget ({options.max_gpu_s:.0f} s) "
                                   "would be passed")
            continue
        _run([c.point], launch, results)
    jobs = [list(j) for j in options.also]
    chains = fastest_chain_by_concurrency(results)
    if sweep_dir is not None and len(set(chains.values())) > 1:
        path = Path(sweep_dir) / ADAPTIVE_CONFIG
        write_adaptive_config(path, adaptive_slots(chains))
        outcome.adaptive_config = str(path)
        if options.measure_adaptive:
            # the largest candidate: SGLang 0.5.15-0.5.18 die at startup on a smaller start (adaptive.startup_crash)
            start = max(p.num_steps for p in chains.values())
            jobs.append(["spec.adaptive=true", f"spec.adaptive_config={path}", f"spec.num_steps={start}",
                         "spec.topk=1"])
    for job in jobs:
        if not _affordable(options, spent(), results):
            outcome.skipped.append(f"extra point {' '.join(job)}: the GPU budget ({options.max_gpu_s:.0f} s) "
                                   "would be passed")
            continue
        outcome.extras.append((job, launch([job])[0]))
    outcome.gpu_seconds = spent()
    if sweep_dir is not None:
        write_predictions(Path(sweep_dir), outcome)
    return outcome


def fastest_chain_by_concurrency(results: dict[GridPoint, PointResult]) -> dict[int, GridPoint]:
    """Per concurrency, the measured chain with the best tokens/s over the temperatures (geometric mean
    of each temperature's tokens/s over that temperature's best chain)."""
    chains = {p: r for p, r in results.items() if p.is_chain and r.status == "ok"}
    return {c: p for c, p in best_by_concurrency(chains).items()}


def best_by_concurrency(results: dict[GridPoint, PointResult]) -> dict[int, GridPoint]:
    """Per concurrency, the point with the highest geometric mean over the temperatures of its
    tokens/s relative to the best at that temperature (so no one temperature dominates); under the points'
    ``bench.objective=goodput``, of its goodput, counted only at levels where it met the goals (a point
    that missed them at a temperature does not compete at that concurrency)."""
    goodput = any((r.bench or {}).get("objective") == "goodput" for r in results.values())
    levels: dict[tuple[float, int], dict[GridPoint, float]] = {}
    for p, r in results.items():
        for lv in r.levels.values():
            value = (lv.goodput_rps if lv.slo_met else None) if goodput else lv.output_tok_per_s
            if value and _closed_loop(lv):
                levels.setdefault((lv.temperature, lv.concurrency), {})[p] = value
    out = {}
    for c in sorted({lv[1] for lv in levels}):
        mine = {lv: v for lv, v in levels.items() if lv[1] == c}
        score = {}
        for p in {p for v in mine.values() for p in v}:
            if all(p in v for v in mine.values()):
                score[p] = math.exp(sum(math.log(v[p] / max(v.values())) for v in mine.values()) / len(mine))
        if score:
            out[c] = max(score, key=lambda p: (score[p], p))
    return out


def _closed_loop(lv) -> bool:
    return lv.request_rate is None and lv.phase is None


def adaptive_slots(steps_by_concurrency: dict[int, GridPoint]) -> dict[int, int]:
    """Batch-size slots of an adaptive config: the lowest load's steps at batch size 1, the others at theirs."""
    low = min(steps_by_concurrency)
    return {(1 if c == low else c): p.num_steps for c, p in sorted(steps_by_concurrency.items())}


def write_predictions(sweep_dir: Path, outcome: PredictOutcome) -> Path:
    """``predictions.json``: the plan, the cost models, every prediction, what was measured and skipped."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / PREDICTIONS
    data = {
        "grid": [p.label for p in outcome.grid],
        "measured_first": [p.label for p in outcome.first],
        "confirmations": [{"point": c.point.label, "levels": [list(lv) for lv in c.levels], "predicted_gain":
                           c.best_gain} for c in outcome.confirmations],
        "cost_models": {str(c): asdict(m) for c, m in outcome.models.items()},
        "predictions": [{"point": p.point.label, "temperature": p.temperature, "concurrency": p.concurrency,
                         "accept_length": p.accept_length, "tok_per_s": p.tok_per_s, "method": p.method,
                         "source": p.source} for p in outcome.predictions],
        "skipped": outcome.skipped, "adaptive_config": outcome.adaptive_config, "gpu_seconds": outcome.gpu_seconds,
    }
    write_json_atomically(path, json_safe(data))
    return path


def _run(points: list[GridPoint], launch: Launch, results: dict[GridPoint, PointResult]) -> None:
    todo = [p for p in points if p not in results]
    if not todo:
        return
    for p, r in zip(todo, launch([point_overrides(p) for p in todo]), strict=True):
        if r is not None:
            results[p] = r


def _levels(results: dict[GridPoint, PointResult]) -> list[MeasuredLevel]:
    return [m for p, r in results.items() if r.status == "ok" for m in measured_levels(p, r)]


def _by_level(values: dict[tuple[GridPoint, float, int], float | None]) -> dict[tuple[float, int], dict]:
    out: dict[tuple[float, int], dict[GridPoint, float]] = {}
    for (p, t, c), v in values.items():
        if v is not None:
            out.setdefault((t, c), {})[p] = v
    return out


def _affordable(options: PredictOptions, spent_s: float, results: dict[GridPoint, PointResult]) -> bool:
    """Whether one more server fits the budget, costed at the mean of the points measured so far."""
    if options.max_gpu_s is None:
        return True
    costs = sorted(r.gpu_seconds for r in results.values() if r.gpu_seconds)
    estimate = costs[len(costs) // 2] if costs else 0.0  # the median: a machine's first start compiles, the rest less
    return spent_s + estimate <= options.max_gpu_s

