#!/usr/bin/env python3
"""Replay the predict sweep over a grid you measured: which points it would launch, what it predicts, what it finds.

    python scripts/replay_predict.py docs/data/2026-11-27-h100-grid-spread.csv [--per-topk] [--confirm 2]
        [--acceptance geometric|oracle] [--within 0.03] [--baseline-s 191] [--output-tokens 128]

Reads a sweep's ``summary.csv`` (or the sweep directory) instead of launching servers. The
measurement points (``automodel_spec.predict.points.measurement_points``) are "measured" by looking
up the grid's values; the rest are predicted; the confirmation points the predictor then asks for
are looked up too; the winner of each level is the best looked-up point. Printed: the points
launched and their GPU seconds (the grid's own ``gpu_seconds`` per point) against the grid's, the
prediction against the recorded value of every point at every level, and whether each level's
winner is within ``--within`` of the grid's best.

The recorded CSVs have no acceptance histograms, so ``--acceptance geometric`` (default) predicts a
shorter draft from the longest point's accept length with one acceptance rate per depth: an honest
but pessimistic stand-in for the histogram a live run records. ``--acceptance oracle`` uses every
point's recorded accept length instead, which isolates the cost model and the choice of points.
``--baseline-s`` removes the shared baseline's seconds from the point that booked them (the grid
point with the most ``gpu_seconds``) and counts them in the grid's total; the replayed plan pays
them only with ``--count-baseline``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from automodel_spec.predict.points import GridPoint, measurement_points, select_confirmations
from automodel_spec.predict.predictor import MeasuredLevel, predict_grid
from automodel_spec.sweep.rows import read_rows


def load_grid(path: Path, output_tokens: float) -> tuple[dict[GridPoint, dict], dict[GridPoint, float]]:
    """Per grid point: its levels (level -> MeasuredLevel) and its GPU seconds."""
    csv_path = path / "summary.csv" if path.is_dir() else path
    levels: dict[GridPoint, dict] = {}
    seconds: dict[GridPoint, float] = {}
    for r in read_rows(csv_path):
        steps = r["effective_num_steps"] or r["requested_num_steps"]
        if r["requested_num_steps"] is None or r["status"] != "ok" or steps is None:
            continue  # SGLang's own choice is not a grid point
        p = GridPoint(int(steps), int(r["effective_topk"] or r["requested_topk"]),
                      int(r["effective_num_draft_tokens"] or r["requested_num_draft_tokens"]))
        tokens = r["output_tokens"] / r["requests"] if r["output_tokens"] and r["requests"] else output_tokens
        lv = (float(r["temperature"]), int(r["concurrency"]))
        levels.setdefault(p, {})[lv] = MeasuredLevel(p, lv[0], lv[1], r["accept_length"], r["output_tok_per_s"],
                                                     tokens, tuple(r["accept_histogram"] or ()) or None)
        seconds[p] = float(r["gpu_seconds"] or 0.0)
    return levels, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="a sweep directory or its summary.csv")
    ap.add_argument("--per-topk", action="store_true", help="measure the longest point of every topk")
    ap.add_argument("--confirm", type=int, default=2, help="at most this many confirmation points")
    ap.add_argument("--min-gain", type=float, default=0.0)
    ap.add_argument("--acceptance", choices=("geometric", "oracle"), default="geometric")
    ap.add_argument("--within", type=float, default=0.03)
    ap.add_argument("--output-tokens", type=float, default=128.0, help="tokens per request, where the CSV lacks it")
    ap.add_argument("--baseline-s", type=float, default=0.0)
    ap.add_argument("--count-baseline", action="store_true")
    args = ap.parse_args()
    levels, seconds = load_grid(args.grid, args.output_tokens)
    if not levels:
        print(f"no grid point in {args.grid}", file=sys.stderr)
        return 1
    if args.baseline_s:
        heavy = max(seconds, key=seconds.get)
        seconds[heavy] -= args.baseline_s
    grid = sorted(levels)
    all_levels = sorted({lv for p in grid for lv in levels[p]})
    grid_s = sum(seconds.values()) + args.baseline_s
    first = measurement_points(grid, per_topk=args.per_topk)
    launched = list(first)

    def measured_levels(points):
        out = [levels[p][lv] for p in points for lv in levels[p]]
        if args.acceptance == "oracle":  # every point's own accept length stands in for the prediction
            out += [MeasuredLevel(m.point, m.temperature, m.concurrency, m.accept_length, None, m.output_tokens)
                    for p in grid if p not in points for m in levels[p].values()]
        return out

    preds, models = predict_grid(grid, measured_levels(first))
    table = {(pr.point, pr.temperature, pr.concurrency): pr for pr in preds}
    predicted = {lv: {pr.point: pr.tok_per_s for pr in preds if (pr.temperature, pr.concurrency) == lv
                      and pr.tok_per_s is not None} for lv in all_levels}
    measured = {lv: {p: levels[p][lv].tok_per_s for p in launched if lv in levels[p]} for lv in all_levels}
    picks = select_confirmations(predicted, measured, args.confirm, args.min_gain)
    launched += [c.point for c in picks]
    used_s = sum(seconds[p] for p in launched) + (args.baseline_s if args.count_baseline else 0.0)

    print(f"{args.grid}: {len(grid)} grid points, {len(all_levels)} levels, {grid_s / 60:.1f} GPU minutes "
          f"(baseline {args.baseline_s:.0f} s included); acceptance: {args.acceptance}")
    print("measured first: " + ", ".join(p.label for p in first))
    print("confirmed: " + (", ".join(f"{c.point.label} (best at {len(c.levels)} level(s), predicted "
                                     f"+{c.best_gain:.1%})" for c in picks) or "none"))
    print(f"launched {len(launched)} of {len(grid)} points: {used_s:.0f} s = {used_s / 60:.1f} GPU minutes = "
          f"{used_s / grid_s:.1%} of the grid's")
    for c, m in sorted(models.items()):
        print(f"cost model c={c}: round = {m.intercept_s * 1e3:.2f} ms + {m.per_step_s * 1e3:.2f} ms/step + "
              f"{m.per_draft_token_s * 1e3:.3f} ms/draft token, + {m.per_token_s * 1e3:.3f} ms/output token; "
              f"fit rms {m.rms_relative_error:.1%} over {m.observations} levels"
              + (f"; not identified: {', '.join(m.unidentified)}" if m.unidentified else ""))
    print()
    print("| level | grid best | winner (launched) | winner / best | within? |")
    print("|---|---|---|---:|---|")
    hits = 0
    for lv in all_levels:
        best_p = max((p for p in grid if lv in levels[p]), key=lambda p: levels[p][lv].tok_per_s)
        win_p = max((p for p in launched if lv in levels[p]), key=lambda p: levels[p][lv].tok_per_s)
        best, win = levels[best_p][lv].tok_per_s, levels[win_p][lv].tok_per_s
        ok = win >= (1 - args.within) * best
        hits += ok
        print(f"| T={lv[0]:g} c={lv[1]} | {best_p.label} {best:.1f} | {win_p.label} {win:.1f} | {win / best:.3f} | "
              f"{'yes' if ok else 'NO'} |")
    print(f"\nwithin {args.within:.0%} of the grid's best at {hits} of {len(all_levels)} levels")
    print()
    print("| point | level | recorded AL | predicted AL | AL error | recorded tok/s | predicted tok/s | "
          "tok/s error | method |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    al_err, tps_err = [], []
    for p in grid:
        for lv in sorted(levels[p]):
            rec = levels[p][lv]
            pr = table.get((p, *lv))
            if pr is None:
                continue
            e_al = _err(pr.accept_length, rec.accept_length)
            e_t = _err(pr.tok_per_s, rec.tok_per_s)
            if p not in first:
                if e_al is not None and args.acceptance != "oracle":
                    al_err.append(abs(e_al))
                if e_t is not None:
                    tps_err.append(abs(e_t))
            role = " (measured)" if p in first else (" (confirmed)" if p in launched else "")
            print(f"| {p.label}{role} | T={lv[0]:g} c={lv[1]} | {rec.accept_length:.2f} | {_f(pr.accept_length)} | "
                  f"{_pct(e_al)} | {rec.tok_per_s:.1f} | {_f(pr.tok_per_s, 1)} | {_pct(e_t)} | {pr.method} |")
    if al_err:
        print(f"\naccept length, points not measured first: median |error| {_median(al_err):.1%}, max {max(al_err):.1%}")
    if tps_err:
        print(f"tokens/s, points not measured first: median |error| {_median(tps_err):.1%}, max {max(tps_err):.1%}")
    return 0


def _err(pred, rec):
    return (pred - rec) / rec if pred is not None and rec else None


def _pct(e):
    return "-" if e is None else f"{e:+.1%}"


def _f(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def _median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


if __name__ == "__main__":
    sys.exit(main())
