"""Sweep summary: every point's ``metrics.json`` into a table, the best setting and the sweep's cost.

``write_summary`` writes ``summary.csv``, ``summary.md``, ``best_override.txt`` and (see ``plots``)
the heat maps into the sweep directory; the Hydra callback (``hydra.glue.SweepSummaryCallback``) calls
it at the end of a multirun, ``python -m automodel_spec.sweep DIR`` by hand (e.g. after a sweep that
ran over several GPU leases).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from automodel_spec.bench.result import METRICS, ResultSchemaError, read_point
from automodel_spec.io.redact import mask
from automodel_spec.sweep.plots import write_heatmaps, write_predicted_plot, write_speedup_plot
from automodel_spec.sweep.prediction_table import attach_predictions, prediction_lines, read_predictions
from automodel_spec.sweep.presets import write_presets
from automodel_spec.sweep.ranking import GOODPUT, TIE, TOK_PER_S, Choice, choose, score, sweep_objective
from automodel_spec.sweep.rows import (
    OTHER_SETUP,
    collect_rows,
    is_auto,
    is_phase,
    level_name,
    level_of,
    level_order,
    override_line,
    setting_of,
    varied_settings,
    write_rows,
)


def best_row(rows: list[dict], level: tuple | None = None, objective: str = TOK_PER_S) -> dict | None:
    """The winner (``ranking.choose``) at one level (``rows.level_of``) or over all; ``None`` where none
    qualifies (under ``goodput``: no setting met the goals)."""
    return choose([r for r in rows if level is None or level_of(r) == level], objective).row


def other_setup_warning(rows: list[dict]) -> str | None:
    """A console line when some points hold the numbers of another pair, prompts, card or SGLang release
    (``rows.OTHER_SETUP``), else ``None``: the summary lists them, and a summary printed whole is easy to read
    past."""
    points = sorted({r["point"] for r in rows if r["status"] == OTHER_SETUP})
    if not points:
        return None
    listed = ", ".join(points[:4]) + (", ..." if len(points) > 4 else "")
    return (f"WARNING: {len(points)} point(s) hold the numbers of another target, draft, prompts, card or SGLang "
            f"than this sweep's newest point and are not ranked ({listed}; why: summary.md): run the sweep's command "
            "again to measure them as it was, or give another bench.name.")


def write_summary(sweep_dir: Path, plots: bool = True, secrets: Iterable[str] = (),
                  objective: str | None = None) -> dict:
    """Write summary.csv, summary.md, best_override.txt and heat maps into ``sweep_dir``.

    Args:
        sweep_dir: the sweep directory (one sub-directory per point).
        plots: draw the heat maps and speedup plots (needs matplotlib).
        secrets: literal API keys; masked wherever a point's name or error would show them (a sweep
            written before keys were left out of point names, an error quoting the command).
        objective: what the winners are chosen by (``tok_per_s`` or ``goodput``, ``sweep.ranking``); by
            default the points' ``bench.objective``.
    """
    sweep_dir = Path(sweep_dir)
    objective = objective or sweep_objective(sweep_dir)
    rows = [_masked_row(r, list(secrets)) for r in collect_rows(sweep_dir)]
    try:
        pred, pred_problem = read_predictions(sweep_dir), None
    except ResultSchemaError as exc:  # the measurements are summarized all the same
        pred, pred_problem = None, f"{exc}: the predictions are left out of this summary"
    attach_predictions(rows, pred)
    write_rows(sweep_dir / "summary.csv", rows)
    levels = sorted({level_of(r) for r in rows if r.get("concurrency") is not None and not is_phase(r)},
                    key=level_order)
    choices = {lv: choose([r for r in rows if not is_phase(r) and level_of(r) == lv], objective) for lv in levels}
    best = {lv: c.row for lv, c in choices.items()}
    varied = varied_settings(rows)  # e.g. two attention backends in one sweep: a column of their own
    md = [f"# Sweep summary: {sweep_dir}", ""]
    if objective == GOODPUT:
        md += ["Winners by goodput within the service-level goals (`bench.objective=goodput`, bench.slo): only a "
               "setting that met the goals at a level can win it; goodputs within "
               f"{TIE:.0%} of each other are ties, told apart by tokens/s.", ""]
    for lv in levels:
        here = [r for r in rows if r["status"] == "ok" and level_of(r) == lv and not is_phase(r)]
        ok = sorted(here, key=lambda r: (-score(r, GOODPUT) if objective == GOODPUT else 0,
                                         -(r.get("speedup") or r.get("output_tok_per_s") or 0)))
        goals = any(r.get("slo_met") is not None for r in ok)
        rate = len(lv) > 2
        extra = (["achieved req/s", "saturated"] if rate else []) + (["goodput req/s", "goals"] if goals else [])
        md += [f"## {level_name(lv)}", "",
               "| " + "".join(f"{c} | " for c in varied) + "steps | topk | draft tokens | tok/s | baseline tok/s "
               "| speedup | accept length | speedup / accept | p50 s | ttft ms p50/p90/p99 | itl ms p50/p90/p99 | "
               "tpot ms p50/p90/p99 | "
               + "".join(f"{c} | " for c in extra),
               "|" + "---|" * len(varied) + "---:|" * (12 + len(extra))]
        md += ["| " + "".join(f"{_f(r.get(c))} | " for c in varied)
               + f"{_f(setting_of(r)[0])}{_auto(r)} | {_f(setting_of(r)[1])} | {_f(setting_of(r)[2])} | "
               f"{_f(r.get('output_tok_per_s'))} | {_f(r.get('baseline_tok_per_s'))} | {_f(r.get('speedup'))} | "
               f"{_pm(r.get('accept_length'), r.get('accept_length_sem'))} | "
               f"{_f(_ratio(r.get('speedup'), r.get('accept_length')))} | "
               f"{_f(r.get('latency_p50_s'), 3)} | {_pcts(r, 'ttft')} | {_pcts(r, 'itl')} | {_pcts(r, 'tpot')} | "
               + "".join(f"{c} | " for c in _extra_cells(r, rate, goals))
               for r in ok]
        md += _choice_lines(lv, choices[lv], varied)
        md.append("")
    md += phase_lines(rows)
    md += category_lines(rows, levels)
    md += served_lines(rows)
    md += prediction_lines(rows, pred)
    if pred_problem:
        md += ["## Predictions", "", f"WARNING: {mask(pred_problem, list(secrets))}", ""]
    md += write_presets(sweep_dir, rows, objective)
    skipped = [r for r in rows if r["status"] != "ok"]
    if skipped:
        lines = {r["point"]: f"- {r['point']}: {r['status']}: {r['reason']}" for r in skipped}  # a point's levels: one line
        md += ["## Skipped or failed points", ""] + list(lines.values())
    md += _cost_lines(sweep_dir, rows)
    shared = sorted({r["point"]: r["other_gpu_processes"] for r in rows if r.get("other_gpu_processes")}.items())
    if shared:
        md += ["", "## Measured while other processes used the GPU (numbers may be off)", ""]
        md += [f"- {point}: {procs}" for point, procs in shared]
    (sweep_dir / "summary.md").write_text("\n".join(md) + "\n")
    lines = [f"{level_name(lv)}: {_best_line(c, varied)}" for lv, c in choices.items() if c.row or c.infeasible]
    (sweep_dir / "best_override.txt").write_text("\n".join(lines) + "\n")
    images = (write_heatmaps(sweep_dir, rows, levels) + write_speedup_plot(sweep_dir, rows)
              + write_predicted_plot(sweep_dir, rows)) if plots else []
    return {"rows": rows, "best": best, "choices": choices, "images": images, "skipped": skipped,
            "objective": objective}


def _extra_cells(row: dict, rate: bool, goals: bool) -> list[str]:
    cells = [_f(row.get("achieved_rate_rps")), {True: "**yes**", False: "no", None: "-"}[row.get("saturated")]] \
        if rate else []
    if goals:
        met = row.get("slo_met")
        cells += [_f(row.get("goodput_rps")),
                  "met" if met else "-" if met is None else "missed: " + "; ".join(row.get("slo_missed") or [])]
    return cells


def _choice_lines(lv: tuple, choice: Choice, varied: list[str]) -> list[str]:
    """The level's winner, its ties, or why it has none."""
    if choice.infeasible and choice.baseline_wins:
        return ["", f"Best at {level_name(lv)}: {_best_text(choice, varied)}"]
    if choice.infeasible:
        near = choice.closest
        return ["", f"No setting met the goals at {level_name(lv)} (infeasible)"
                + (f"; the highest goodput was `{override_line(near, varied)}` at {_f(near.get('goodput_rps'))} "
                   f"requests/s, which missed: {'; '.join(near.get('slo_missed') or [])}." if near else ".")]
    if not choice.row:
        return []
    out = ["", f"Best at {level_name(lv)}: {_best_text(choice, varied)}"]
    if choice.ties:
        out.append(f"Tied on goodput (within {TIE:.0%}) and chosen by tokens/s over: "
                   + ", ".join(f"`{override_line(r, varied)}` ({_f(r.get('goodput_rps'))} req/s, "
                               f"{_f(r.get('output_tok_per_s'))} tok/s)" for r in choice.ties))
    return out


def phase_lines(rows: list[dict]) -> list[str]:
    """Phased loads (``bench.phases``): per temperature, each point's phases and whole run side by side."""
    here = [r for r in rows if r["status"] == "ok" and is_phase(r)]
    if not here:
        return []
    out = ["## Phased load", "",
           "One server, the phases back to back without a restart or a cache flush (bench.phases); `whole` is every "
           "request of every phase over the run's time. Each cell: tok/s, p99 ITL ms"
           + (", goodput req/s (goals met: +, missed: -)" if any(r.get("slo_met") is not None for r in here) else "")
           + "; SAT: the phase saturated.", ""]
    for temp in sorted({r["temperature"] for r in here}):
        mine = [r for r in here if r["temperature"] == temp]
        phases = sorted({(r["phase"], r["phase_load"]) for r in mine if r["phase"]})
        out += [f"### temperature {temp:g}", "",
                "| setting | " + "".join(f"{n}: {load} | " for n, load in phases) + "whole |",
                "|---|" + "---:|" * (len(phases) + 1)]
        for point in sorted({r["point"] for r in mine}):
            at = {r["phase"]: r for r in mine if r["point"] == point}
            label = override_line(next(iter(at.values())))
            out.append(f"| `{label}` | " + "".join(f"{_phase_cell(at.get(n))} | " for n, _ in phases)
                       + f"{_phase_cell(at.get(0))} |")
        base = {r["phase"]: r["baseline_tok_per_s"] for r in mine if r.get("baseline_tok_per_s")}
        if base:  # the shared baseline, measured under the same phases
            out.append("| no speculation (tok/s) | " + "".join(f"{_f(base.get(n), 1)} | " for n, _ in phases)
                       + f"{_f(base.get(0), 1)} |")
        out.append("")
    return out


def _phase_cell(r: dict | None) -> str:
    if r is None:
        return "-"
    cell = f"{_f(r.get('output_tok_per_s'), 1)}, {_ms(r.get('itl_p99_s'))}"
    if r.get("slo_met") is not None:
        cell += f", {_f(r.get('goodput_rps'))} {'+' if r['slo_met'] else '-'}"
    return cell + (" SAT" if r.get("saturated") else "")


def category_lines(rows: list[dict], levels: list[tuple[float, int]]) -> list[str]:
    """Accept length per prompt category, one table per level (as SpecBench reports per task)."""
    with_cats = [r for r in rows if r["status"] == "ok" and r.get("by_category")
                 and any(c.get("accept_length") for c in r["by_category"].values())]
    if not with_cats:
        return []
    cats = sorted({c for r in with_cats for c in r["by_category"]})
    out = ["## Accept length by prompt category", ""]
    for lv in levels:
        here = sorted((r for r in with_cats if level_of(r) == lv), key=lambda r: -(r.get("accept_length") or 0))
        if not here:
            continue
        out += [f"### {level_name(lv)}", "", "| setting | " + " | ".join(cats) + " | all |",
                "|---|" + "---:|" * (len(cats) + 1)]
        for r in here:
            steps, topk, tokens = setting_of(r)
            name = f"{steps}/{topk}/{tokens}{_auto(r)}"
            cells = [_f((r["by_category"].get(c) or {}).get("accept_length")) for c in cats]
            out.append(f"| {name} | " + " | ".join(cells) + f" | {_f(r.get('accept_length'))} |")
        out.append("")
    return out


def served_lines(rows: list[dict]) -> list[str]:
    """Served vs reference accept length (exact, interval or bound), per depth, and the lossless check,
    per point and level."""
    here = [r for r in rows if r["status"] == "ok"
            and (r.get("served_as_trained") is not None or r.get("lossless_compared"))]
    if not here:
        return []
    out = ["## Served as trained and lossless", "",
           "Reference: the exported draft computed without SGLang with SGLang's tree and verify rules "
           "(docs/benchmarks.md, \"Reference accept length\"): exact at temperature 0, the 99% interval of one "
           "served run at temperature > 0, a bound for a tree of unknown size; depths: the share of rounds "
           "accepting at least d drafts, held against the reference's; identical: outputs equal to the "
           "no-speculation baseline's (temperature 0).", "",
           "| point | T | load | accept length | reference | kind | verdict | depths | identical | first difference |",
           "|---|---:|---:|---:|---:|---|---|---|---:|---:|"]
    warnings = []
    for r in sorted(here, key=lambda r: (r["point"], r.get("temperature") or 0.0, r.get("phase") is not None,
                                         r.get("phase") or 0, r.get("request_rate") or 0.0, r["concurrency"])):
        verdict = {True: "served as trained", False: "**NOT served as trained**", None: "-"}[r.get("served_as_trained")]
        depths = {True: "ok", False: "**short**", None: "-"}[r.get("depths_as_trained")]
        same = f"{r['lossless_identical']}/{r['lossless_compared']}" if r.get("lossless_compared") else "-"
        interval = r.get("reference_interval")
        reference = (f"{_f(r.get('reference_accept_length'))} [{interval[0]:.2f}, {interval[1]:.2f}]"
                     if interval else _f(r.get("reference_accept_length")))
        t, c = f"{r.get('temperature') or 0:g}", _load_cell(r, "c=")
        out.append(f"| {r['point']} | {t} | {_load_cell(r)} | {_f(r.get('accept_length'))} | {reference} | "
                   f"{r.get('reference_kind') or '-'} | {verdict} | {depths} | {same} | "
                   f"{_f(r.get('lossless_first_difference'), 0)} |")
        if r.get("served_as_trained") is False:
            warnings.append(f"- WARNING {r['point']} T={t} {c}: {r.get('reference_verdict')}")
        if r.get("depths_as_trained") is False:
            warnings.append(f"- WARNING {r['point']} T={t} {c}: {r.get('depth_verdict')}")
        if r.get("trained_depths_ok") is False:
            warnings.append(f"- WARNING {r['point']} T={t} {c}: the reference is {r.get('trained_depth_verdict')}")
        if r.get("lossless_compared") and r["lossless_identical"] < r["lossless_compared"]:
            why = "kernels of other shapes can resolve near-ties differently (docs/benchmarks.md)"
            warnings.append(f"- WARNING {r['point']} T={t} {c}: "
                            f"{r['lossless_compared'] - r['lossless_identical']} output(s) differ from the "
                            f"baseline's, first at token {r['lossless_first_difference']}: {why}")
    return out + [""] + (warnings + [""] if warnings else [])


def _load_cell(row: dict, closed: str = "") -> str:
    """A row's load in a table: its concurrency (``closed`` before it), ``20/s`` (``, c<=4`` with a cap), or its
    phase (``phase 2: c8``, ``whole: c1 -> c8``)."""
    if row.get("phase") is not None:
        return f"phase {row['phase']}: {row.get('phase_load')}" if row["phase"] else f"whole: {row.get('phase_load')}"
    if row.get("request_rate") is not None:
        return f"{row['request_rate']:g}/s" + (f", c<={row['concurrency']}" if row["concurrency"] else "")
    return f"{closed}{row['concurrency']}"


def _masked_row(row: dict, secrets: list[str]) -> dict:
    return {k: mask(v, secrets) if isinstance(v, str) else v for k, v in row.items()}


def baseline_gpu_seconds(sweep_dir: Path) -> float:
    """The server seconds of the sweep's shared no-speculation baseline (0 when there is none)."""
    total = 0.0
    for path in Path(sweep_dir).glob(f"baseline/*/{METRICS}"):
        try:
            total += read_point(path).gpu_seconds or 0.0
        except ResultSchemaError:
            continue  # a baseline this version cannot read is measured again, and costs again
    return total


def _cost_lines(sweep_dir: Path, rows: list[dict]) -> list[str]:
    per_point = {r["point"]: r.get("gpu_seconds") or 0.0 for r in rows if r["status"] in ("ok", "failed")}
    if not per_point:
        return []
    points_s, n, baseline_s = sum(per_point.values()), len(per_point), baseline_gpu_seconds(sweep_dir)
    return ["## Cost", "",
            f"{n} point(s) ran a server: {points_s / 60:.1f} GPU minutes, {points_s / n:.0f} s a point on "
            f"average, plus {baseline_s / 60:.1f} for the shared baseline; {(points_s + baseline_s) / 60:.1f} "
            "GPU minutes in all (server start to stop, times its GPUs (sglang.tp_size), divided among the servers "
            f"sharing a GPU (bench.servers_per_gpu), as `gpu_seconds` in each {METRICS}).", ""]


def _below_one(speedup: float) -> str:
    """A speedup under 1 that never rounds up to read as 1 (0.9996 -> 0.999)."""
    return f"{math.floor(speedup * 1000) / 1000:.3f}"


def _best_text(choice: Choice, varied: list[str]) -> str:
    row = choice.row or choice.closest
    if choice.baseline_wins and choice.objective == GOODPUT:
        return (f"`algorithm=none`: no speculation served {_f(row['baseline_goodput_rps'])} requests/s within the "
                f"goals, more than any setting (the best, `{override_line(row, varied)}`, "
                + (f"{_f(row.get('goodput_rps'))})" if choice.row else "missed them)"))
    if choice.baseline_wins:
        return (f"`algorithm=none`: no setting beat no speculation (the best, `{override_line(row, varied)}`, "
                f"reached x{_below_one(row['speedup'])})")
    return f"`{override_line(row, varied)}`"


def _best_line(choice: Choice, varied: list[str]) -> str:
    """One line of best_override.txt: the overrides, then what they measured (or why there is none)."""
    row = choice.row or choice.closest
    if choice.baseline_wins and choice.objective == GOODPUT:
        return (f"algorithm=none  # no speculation served {row['baseline_goodput_rps']:.2f} req/s within the goals; "
                f"best setting was {override_line(row, varied)} at {_f(row.get('goodput_rps'))} req/s"
                + ("" if choice.row else " (missed the goals)"))
    if choice.infeasible:
        return "(none)  # no setting met the goals (bench.slo) at this level"
    goodput = f", goodput {row['goodput_rps']:.2f} req/s within the goals" if row.get("slo_met") else ""
    if choice.baseline_wins:
        return (f"algorithm=none  # no setting beat no speculation ({row['baseline_tok_per_s']:.1f} tok/s); "
                f"best was {override_line(row, varied)} at x{_below_one(row['speedup'])}")
    return (f"{override_line(row, varied)}  # {row['output_tok_per_s']:.1f} tok/s"
            + (f", x{row['speedup']:.2f}" if row.get("speedup") else "") + goodput)


def _auto(row: dict) -> str:
    """Marks a point whose setting SGLang chose (none was given), or SGLang's adaptive mode."""
    if row.get("requested_adaptive"):
        return " (adaptive)"
    return " (auto)" if is_auto(row) and row.get("effective_num_steps") is not None else ""


def _pm(value, err) -> str:
    """``value ± standard error`` (the error only where there is one)."""
    return _f(value) + (f" ± {err:.2f}" if value is not None and err is not None else "")


def _ms(v) -> str:
    """Seconds as milliseconds, ``-`` for none."""
    return "-" if v is None else f"{v * 1e3:.1f}"


def _pcts(row: dict, name: str) -> str:
    """A latency's p50/p90/p99 in milliseconds (``-`` where the level was not streamed)."""
    values = [row.get(f"{name}_p{q}_s") for q in (50, 90, 99)]
    return "-" if all(v is None for v in values) else "/".join(_ms(v) for v in values)


def _ratio(a, b):
    return a / b if a and b else None


def _f(v, nd: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)
