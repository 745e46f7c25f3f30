"""What a sweep ranks its settings by: output tokens/s, or goodput within the service-level goals.

``bench.objective`` picks it (``tok_per_s`` or ``goodput``), read from the points' ``metrics.json``. Under
``goodput`` only a setting that met the goals at a level (``slo_met``: the p99s within ``bench.slo``'s
bounds, no failed request, no saturation) can win it, and among those the highest goodput wins; settings
within ``TIE`` of the winner's goodput are ties, told apart by tokens/s and named. A level where no setting
met the goals is *infeasible*: it has no winner, and the summary says so with the best goodput reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from automodel_spec.bench.result import ResultSchemaError, read_point
from automodel_spec.sweep.rows import level_of, point_files

TOK_PER_S, GOODPUT = "tok_per_s", "goodput"
# goodputs this close (relative) are a tie: a few requests more or less within the goals is noise
TIE = 0.01


@dataclass
class Choice:
    """The winner of one level under an objective.

    Attributes:
        row: the winner; ``None`` when no setting qualifies (nothing measured, or ``infeasible``).
        ties: other settings within ``TIE`` of the winner's goodput (goodput only), the winner chosen among
            them by tokens/s.
        infeasible: goodput only: settings were measured here, none met the goals.
        closest: when infeasible, the setting with the highest goodput (for the summary's sentence).
    """

    row: dict | None
    ties: list[dict] = field(default_factory=list)
    infeasible: bool = False
    closest: dict | None = None
    objective: str = TOK_PER_S

    @property
    def baseline_wins(self) -> bool:
        """No speculation does better here: a higher tokens/s than the winner's, or (goodput) it met the goals
        where no setting did, or with a goodput more than ``TIE`` above the winner's."""
        row = self.row or self.closest
        if row is None:
            return False
        if self.objective != GOODPUT:
            return row.get("speedup") is not None and row["speedup"] < 1.0
        base = row.get("baseline_goodput_rps")
        if base is None:
            return False
        return self.row is None or base > (self.row.get("goodput_rps") or 0.0) * (1 + TIE)


def sweep_objective(sweep_dir: Path) -> str:
    """``bench.objective`` of the sweep's points (the first readable one's; ``tok_per_s`` when none says)."""
    for path in point_files(Path(sweep_dir)):
        try:
            bench = read_point(path).bench or {}
        except ResultSchemaError:
            continue
        if bench.get("objective"):
            return str(bench["objective"])
    return TOK_PER_S


def measured(rows: list[dict], level: tuple | None = None) -> list[dict]:
    """The measured rows with tokens/s, at ``level`` (``rows.level_of``) or at every level."""
    return [r for r in rows if r["status"] == "ok" and r.get("output_tok_per_s")
            and (level is None or level_of(r) == level)]


def choose(rows: list[dict], objective: str = TOK_PER_S) -> Choice:
    """The winner among ``rows`` (one level's) under ``objective``."""
    ok = measured(rows)
    if not ok:
        return Choice(None, objective=objective)
    if objective != GOODPUT:
        return Choice(max(ok, key=lambda r: r["output_tok_per_s"]), objective=objective)
    met = [r for r in ok if r.get("slo_met")]
    if not met:
        scored = [r for r in ok if r.get("goodput_rps") is not None]
        closest = max(scored, key=lambda r: (r["goodput_rps"], r["output_tok_per_s"])) if scored else None
        return Choice(None, infeasible=True, closest=closest, objective=objective)
    top = max(r.get("goodput_rps") or 0.0 for r in met)
    tied = [r for r in met if (r.get("goodput_rps") or 0.0) >= top * (1 - TIE)]
    winner = max(tied, key=lambda r: r["output_tok_per_s"])
    return Choice(winner, ties=[r for r in tied if r is not winner], objective=objective)


def score(row: dict, objective: str = TOK_PER_S) -> float:
    """What a row is ranked by in a table: goodput (0 where the goals were missed) or tokens/s."""
    if objective == GOODPUT:
        return (row.get("goodput_rps") or 0.0) if row.get("slo_met") else 0.0
    return row.get("output_tok_per_s") or 0.0
