#!/usr/bin/env python3
"""Compare a live predict sweep with a recorded full grid; write the table for docs/benchmarks.md.

    python scripts/analysis/compare_predict.py sweeps/predict --grid docs/data/2026-11-27-h100-grid-spread.csv \\
        [--baseline-s 191] [--within 0.03] [--out compare.md]

Reads the predict sweep's points (``metrics.json``, through the result schema) and ``predictions.json``,
and the grid's ``summary.csv`` (schema 2 or 3). Writes, in Markdown: what the predict sweep launched
and its GPU minutes against the grid's; per level, the grid's best, the predict sweep's winner (the
best point it measured) with its tokens/s in this run and in the grid, whether the winner is within
``--within`` of the grid's best (judged on the grid's own numbers, so run-to-run drift does not
count, and on this run's), SGLang's own choice and its adaptive mode where measured; and every
prediction against the grid's recorded value and this run's measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import median

from automodel_spec.predict.driver import PREDICTIONS
from automodel_spec.sweep.prediction_table import number, percent, relative_error
from automodel_spec.sweep.rows import collect_rows, is_auto, read_rows, setting_of


def label(row: dict) -> str | None:
    steps, topk, tokens = setting_of(row)
    return None if steps is None else f"{steps}/{topk}/{tokens}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--grid", type=Path, required=True, help="the recorded grid's summary.csv")
    ap.add_argument("--baseline-s", type=float, default=0.0,
                    help="seconds of the grid's shared baseline booked into its most expensive point")
    ap.add_argument("--within", type=float, default=0.03)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    pred_path = args.sweep_dir / PREDICTIONS
    if not pred_path.is_file():
        print(f"{pred_path} is missing: not a predict sweep, or its first points did not finish", file=sys.stderr)
        return 1
    pred = json.loads(pred_path.read_text())
    rows = [r for r in collect_rows(args.sweep_dir) if r["status"] == "ok"]
    grid_rows = [r for r in read_rows(args.grid) if r["status"] == "ok"]
    grid = {(label(r), r["temperature"], r["concurrency"]): r for r in grid_rows if not is_auto(r)}
    auto = {(r["temperature"], r["concurrency"]): r for r in grid_rows if is_auto(r)}
    grid_s = {}
    for r in grid_rows:
        if not is_auto(r):
            grid_s[label(r)] = r["gpu_seconds"] or 0.0
    if args.baseline_s:
        heavy = max(grid_s, key=grid_s.get)
        grid_s[heavy] -= args.baseline_s
    grid_total = sum(grid_s.values()) + args.baseline_s
    mine = {(label(r), r["temperature"], r["concurrency"]): r for r in rows
            if not r.get("requested_adaptive") and label(r)}
    adaptive = {(r["temperature"], r["concurrency"]): r for r in rows if r.get("requested_adaptive")}
    points_s = {r["point"]: r["gpu_seconds"] or 0.0 for r in collect_rows(args.sweep_dir)
                if r["status"] in ("ok", "failed")}
    grid_points = [p for p in points_s if not p.startswith("spec.adaptive")]
    used = sum(points_s[p] for p in grid_points)
    extra = sum(v for p, v in points_s.items() if p not in grid_points)
    levels = sorted({(t, c) for _, t, c in grid})
    md = [f"Predict sweep `{args.sweep_dir}` against the grid `{args.grid}`.", "",
          f"- measured first: {', '.join(pred['measured_first'])}; confirmed: "
          f"{', '.join(c['point'] for c in pred['confirmations']) or 'none'}"
          + (f"; skipped: {'; '.join(pred['skipped'])}" if pred.get("skipped") else ""),
          f"- GPU time of the grid points it launched: {used:.0f} s = {used / 60:.1f} GPU minutes = "
          f"**{used / grid_total:.1%}** of the grid's {grid_total / 60:.1f} (its baseline included); extra points "
          f"(adaptive mode): {extra:.0f} s", ""]
    md += ["| level | grid best (recorded) | predict winner | its tok/s here / in the grid | winner / grid best "
           "(grid's numbers) | (this run's) | within? | SGLang's choice (grid) | adaptive mode (here) |",
           "|---|---|---|---|---:|---:|---|---|---|"]
    hits = 0
    for lv in levels:
        best_key = max((k for k in grid if k[1:] == lv), key=lambda k: grid[k]["output_tok_per_s"])
        best = grid[best_key]["output_tok_per_s"]
        here = [k for k in mine if k[1:] == lv]
        if not here:
            md.append(f"| T={lv[0]:g} c={lv[1]} | {best_key[0]} {best:.1f} | - | - | - | - | - | - | - |")
            continue
        win = max(here, key=lambda k: mine[k]["output_tok_per_s"])
        now, then = mine[win]["output_tok_per_s"], grid.get(win, {}).get("output_tok_per_s")
        ok = then is not None and then >= (1 - args.within) * best
        hits += ok
        sg = auto.get(lv)
        ad = adaptive.get(lv)
        md.append(f"| T={lv[0]:g} c={lv[1]} | {best_key[0]} {best:.1f} | {win[0]} | {now:.1f} / {number(then, 1)} | "
                  f"{number(then / best if then else None, 3)} | {now / best:.3f} | {'yes' if ok else 'NO'} | "
                  f"{(label(sg) + ' ' + format(sg['output_tok_per_s'], '.1f')) if sg else '-'} | "
                  f"{(format(ad['output_tok_per_s'], '.1f') + ' at ' + format(ad['accept_length'] or 0, '.2f')) if ad else '-'} |")
    md += ["", f"Winner within {args.within:.0%} of the grid's best (grid's numbers) at {hits} of {len(levels)} levels.",
           "", "| point | level | role | predicted AL | grid AL | AL error | here AL | predicted tok/s | grid tok/s | "
           "tok/s error | here tok/s | method |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    first, confirmed = set(pred["measured_first"]), {c["point"] for c in pred["confirmations"]}
    err_al, err_t = [], []
    for p in sorted(pred["predictions"], key=lambda p: (p["concurrency"], p["temperature"], p["point"])):
        key = (p["point"], p["temperature"], p["concurrency"])
        g, h = grid.get(key), mine.get(key)
        role = "measured first" if p["point"] in first else "confirmed" if p["point"] in confirmed else "predicted"
        e_al = relative_error(p["accept_length"], g and g["accept_length"])
        e_t = relative_error(p["tok_per_s"], g and g["output_tok_per_s"])
        if role != "measured first":
            err_al += [abs(e_al)] if e_al is not None else []
            err_t += [abs(e_t)] if e_t is not None else []
        md.append(f"| {p['point']} | T={p['temperature']:g} c={p['concurrency']} | {role} | {number(p['accept_length'])} | "
                  f"{number(g and g['accept_length'])} | {percent(e_al)} | {number(h and h['accept_length'])} | "
                  f"{number(p['tok_per_s'], 1)} | {number(g and g['output_tok_per_s'], 1)} | {percent(e_t)} | "
                  f"{number(h and h['output_tok_per_s'], 1)} | {p['method']} |")
    if err_t:
        md += ["", f"Points not measured first, against the grid: median |error| accept length "
               f"{median(err_al):.1%} (max {max(err_al):.1%}), tokens/s {median(err_t):.1%} (max {max(err_t):.1%})."]
    text = "\n".join(md) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0



if __name__ == "__main__":
    sys.exit(main())
