#!/usr/bin/env python3
"""Replay the predict sweep over a grid you measured: which points it launches, what it predicts, what it finds.

    python scripts/analysis/replay_predict.py docs/data/2026-11-27-h100-grid-spread.csv --baseline-s 191
        [--per-topk] [--confirm 1] [--min-gain 0] [--max-gpu-s S] [--within 0.03] [--output-tokens 128]

Runs the predict sweep's own driver (``automodel_spec.predict.driver.run_predict_sweep``) with a launcher
that looks points up in a sweep's ``summary.csv`` (or sweep directory) instead of starting servers, so
the points it chooses, its predictions and its confirmations are the ones a live ``+sweep=predict``
would make from the same measurements. Printed: the points launched and their GPU seconds (the
grid's own ``gpu_seconds`` per point) against the grid's total, whether each level's winner (the best
launched point) is within ``--within`` of the grid's best, and every prediction against the
recorded value.

Recorded grids written before schema 3 have no acceptance histograms: the predictor then fits one
acceptance rate per depth between the accept lengths measured at each topk (and says so in the
method column), which is coarser than the histogram a live run records. The line "cost model alone"
predicts every point's tokens/s from its *recorded* accept length, to tell the cost model's error
from the acceptance prediction's. ``--baseline-s`` removes the shared baseline's seconds from the
point that booked them (the grid point with the most ``gpu_seconds``) and counts them in the grid's
total; the replayed sweep pays them only with ``--count-baseline``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import median

from automodel_spec.bench.result import LevelResult, PointResult
from automodel_spec.predict.driver import PredictOptions, run_predict_sweep
from automodel_spec.predict.points import GridPoint
from automodel_spec.sweep.prediction_table import number, percent, relative_error
from automodel_spec.sweep.rows import read_rows


def load_grid(path: Path, output_tokens: float) -> tuple[dict[GridPoint, PointResult], dict]:
    """Per grid point its recorded result (levels from the CSV), and SGLang's own choice's rows if present."""
    csv_path = path / "summary.csv" if path.is_dir() else path
    results: dict[GridPoint, PointResult] = {}
    for r in read_rows(csv_path):
        if r["requested_num_steps"] is None or r["status"] != "ok":
            continue  # SGLang's own choice, failed or invalid points are not grid points
        p = GridPoint(int(r["effective_num_steps"] or r["requested_num_steps"]),
                      int(r["effective_topk"] or r["requested_topk"]),
                      int(r["effective_num_draft_tokens"] or r["requested_num_draft_tokens"]))
        res = results.setdefault(p, PointResult(status="ok", gpu_seconds=float(r["gpu_seconds"] or 0.0)))
        requests = r["requests"] or 1
        lv = LevelResult(temperature=float(r["temperature"]), concurrency=int(r["concurrency"]),
                         requests=requests, failed_requests=r["failed_requests"] or 0,
                         output_tokens=r["output_tokens"] or int(output_tokens * requests),
                         output_tok_per_s=r["output_tok_per_s"], accept_length=r["accept_length"],
                         accept_histogram=r["accept_histogram"])
        res.levels[lv.key] = lv
    return results, {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="a sweep directory or its summary.csv")
    ap.add_argument("--per-topk", action="store_true", help="measure the longest point of every topk")
    ap.add_argument("--confirm", type=int, default=1, help="at most this many confirmation points")
    ap.add_argument("--min-gain", type=float, default=0.0)
    ap.add_argument("--max-gpu-s", type=float, default=None)
    ap.add_argument("--within", type=float, default=0.03)
    ap.add_argument("--output-tokens", type=float, default=128.0, help="tokens per request, where the CSV lacks it")
    ap.add_argument("--baseline-s", type=float, default=0.0)
    ap.add_argument("--count-baseline", action="store_true")
    args = ap.parse_args()
    recorded, _ = load_grid(args.grid, args.output_tokens)
    if not recorded:
        print(f"no grid point in {args.grid}", file=sys.stderr)
        return 1
    if args.baseline_s:
        heavy = max(recorded, key=lambda p: recorded[p].gpu_seconds or 0.0)
        recorded[heavy].gpu_seconds -= args.baseline_s
    grid = sorted(recorded)
    by_overrides = {(f"spec.num_steps={p.num_steps}", f"spec.topk={p.topk}"): p for p in grid}

    def launch(jobs):
        return [recorded.get(by_overrides.get(tuple(job))) for job in jobs]

    options = PredictOptions(per_topk=args.per_topk, confirm=args.confirm, min_gain=args.min_gain,
                             max_gpu_s=args.max_gpu_s)
    baseline = args.baseline_s if args.count_baseline else 0.0
    out = run_predict_sweep(grid, options, launch, baseline_s=lambda: baseline)
    grid_s = sum(r.gpu_seconds or 0.0 for r in recorded.values()) + args.baseline_s
    levels = sorted({(lv.temperature, lv.concurrency) for r in recorded.values() for lv in r.levels.values()})
    launched = list(out.results)

    print(f"{args.grid}: {len(grid)} grid points, {len(levels)} levels, {grid_s / 60:.1f} GPU minutes "
          f"(the baseline's {args.baseline_s:.0f} s included)")
    print("measured first: " + ", ".join(p.label for p in out.first))
    print("confirmed: " + (", ".join(f"{c.point.label} (contends for the best at {len(c.levels)} level(s), "
                                     f"+{c.best_gain:.1%} over the measured best)" for c in out.confirmations)
                           or "none"))
    for line in out.skipped:
        print(f"skipped: {line}")
    print(f"launched {len(launched)} of {len(grid)} points: {out.gpu_seconds:.0f} s = {out.gpu_seconds / 60:.1f} "
          f"GPU minutes = {out.gpu_seconds / grid_s:.1%} of the grid's")
    for c, m in sorted(out.models.items()):
        print(f"cost model c={c}: round = {m.intercept_s * 1e3:.2f} ms + {m.per_step_s * 1e3:.2f} ms/step + "
              f"{m.per_draft_token_s * 1e3:.3f} ms/draft token, + {m.per_token_s * 1e3:.3f} ms/output token; "
              f"fit rms {m.rms_relative_error:.1%} over {m.observations} levels"
              + (f"; not identified: {', '.join(m.unidentified)}" if m.unidentified else ""))
    print()
    print("| level | grid best | winner (best launched) | winner / best | within? |")
    print("|---|---|---|---:|---|")
    hits = 0
    for lv in levels:
        tps = {p: _tps(recorded[p], lv) for p in grid}
        best_p = max((p for p in grid if tps[p]), key=lambda p: tps[p])
        win_p = max((p for p in launched if tps.get(p)), key=lambda p: tps[p])
        ok = tps[win_p] >= (1 - args.within) * tps[best_p]
        hits += ok
        print(f"| T={lv[0]:g} c={lv[1]} | {best_p.label} {tps[best_p]:.1f} | {win_p.label} {tps[win_p]:.1f} | "
              f"{tps[win_p] / tps[best_p]:.3f} | {'yes' if ok else 'NO'} |")
    print(f"\nwithin {args.within:.0%} of the grid's best at {hits} of {len(levels)} levels")
    print()
    print("| point | level | recorded AL | predicted AL | AL error | recorded tok/s | predicted tok/s | "
          "tok/s error | method |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    al_err, tps_err, cost_err = [], [], []
    for pr in sorted(out.predictions, key=lambda x: (x.point, x.temperature, x.concurrency)):
        rec = recorded[pr.point].level(pr.temperature, pr.concurrency)
        if rec is None:
            continue
        e_al, e_t = relative_error(pr.accept_length, rec.accept_length), relative_error(pr.tok_per_s, rec.output_tok_per_s)
        model = out.models.get(pr.concurrency)
        if pr.point not in out.first:
            al_err += [abs(e_al)] if e_al is not None else []
            tps_err += [abs(e_t)] if e_t is not None else []
            if model and rec.accept_length:
                cost_err.append(abs(relative_error(model.tok_per_s(rec.accept_length, pr.point.num_steps,
                                                         pr.point.num_draft_tokens), rec.output_tok_per_s)))
        role = " (measured first)" if pr.point in out.first else (" (confirmed)" if pr.point in launched else "")
        print(f"| {pr.point.label}{role} | T={pr.temperature:g} c={pr.concurrency} | {rec.accept_length:.2f} | "
              f"{number(pr.accept_length)} | {percent(e_al)} | {rec.output_tok_per_s:.1f} | {number(pr.tok_per_s, 1)} | "
              f"{percent(e_t)} | {pr.method} |")
    print()
    for name, errs in (("accept length", al_err), ("tokens/s", tps_err), ("tokens/s, cost model alone (recorded "
                                                                            "accept lengths)", cost_err)):
        if errs:
            print(f"{name}, points not measured first: median |error| {median(errs):.1%}, max {max(errs):.1%} "
                  f"({len(errs)} point-levels)")
    return 0


def _tps(result: PointResult, level: tuple[float, int]) -> float | None:
    lv = result.level(*level)
    return lv.output_tok_per_s if lv is not None else None



if __name__ == "__main__":
    sys.exit(main())
