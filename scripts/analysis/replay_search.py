#!/usr/bin/env python3
"""How many launches would an Optuna search have needed on a grid you measured?

    python scripts/analysis/replay_search.py SWEEP_DIR [--temperature T] [--concurrency C] [--trials 8]
        [--within 0.03] [--seeds 200] [--startup 10,4]

Replays samplers over the grid's measured points instead of launching servers: each trial asks the
sampler for (steps, topk) among the values the grid measured, and scores it with the grid's tokens/s
at the chosen level (0 for a point that did not run), as ``+sweep=optuna`` does on a GPU. A setting
proposed again costs no launch (the sweep reuses finished points), as in a real sweep. For every
sampler it prints, over many seeds: how often it got within ``--within`` of the grid's best in
``--trials`` trials, the distinct launches that took (median), and their GPU minutes (the grid's
own ``gpu_seconds`` of the points launched; the shared no-speculation baseline, measured once by
any sweep, comes on top).

Samplers: random, and TPE with each ``--startup`` count of random start-up trials (Optuna's default
is 10, more than the preset's 8 trials, which makes TPE a random search; ``conf/sweep/optuna.yaml``
sets ``n_startup_trials: 4``, the count these replays chose).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from automodel_spec.sweep.rows import collect_rows
from automodel_spec.sweep.summary import baseline_gpu_seconds

INSTALL_HINT = "pip install optuna (or: pip install -e '.[optuna]')"


def measured_grid(sweep_dir: Path, temperature: float, concurrency: int) -> dict[tuple[int, int], tuple[float, float]]:
    """(steps, topk) -> (tokens/s at the level, GPU seconds of the point), for the points the grid set."""
    grid = {}
    for r in collect_rows(sweep_dir):
        if r["requested_num_steps"] is None or r["requested_topk"] is None:  # SGLang's own choice
            continue
        key = (int(r["requested_num_steps"]), int(r["requested_topk"]))
        if r["status"] != "ok":
            grid.setdefault(key, (0.0, float(r.get("gpu_seconds") or 0.0)))
        elif (float(r["temperature"]), int(r["concurrency"])) == (temperature, concurrency):
            grid[key] = (float(r["output_tok_per_s"]), float(r.get("gpu_seconds") or 0.0))
    return grid


def replay(optuna, sampler, grid: dict, trials: int, goal: float) -> tuple[int | None, float | None]:
    """Distinct launches and their GPU seconds until a point scored >= goal (None, None: never)."""
    steps = sorted({s for s, _ in grid})
    topks = sorted({k for _, k in grid})
    study = optuna.create_study(direction="maximize", sampler=sampler)
    launched: list[tuple[int, int]] = []
    for _ in range(trials):
        trial = study.ask()
        point = (trial.suggest_categorical("spec.num_steps", steps), trial.suggest_categorical("spec.topk", topks))
        if point not in launched:
            launched.append(point)
        value = grid.get(point, (0.0, 0.0))[0]
        study.tell(trial, value)
        if value >= goal:
            return len(launched), sum(grid.get(p, (0.0, 0.0))[1] for p in launched)
    return None, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--trials", type=int, default=8, help="trials per search (the preset's n_trials)")
    ap.add_argument("--within", type=float, default=0.03, help="how close to the grid's best counts as found")
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--startup", default="10,4", help="TPE start-up trial counts to compare, comma-separated")
    args = ap.parse_args()
    try:
        import optuna
    except ImportError:
        print(f"replay_search needs Optuna: {INSTALL_HINT}", file=sys.stderr)
        return 2
    grid = measured_grid(args.sweep_dir, args.temperature, args.concurrency)
    level = f"temperature {args.temperature:g}, concurrency {args.concurrency}"
    if not any(v for v, _ in grid.values()):
        print(f"no measured grid point at {level} in {args.sweep_dir}: give --temperature and --concurrency "
              "of a level the sweep measured", file=sys.stderr)
        return 1
    best_point, (best, _) = max(grid.items(), key=lambda kv: kv[1][0])
    goal = (1 - args.within) * best
    near = sorted(p for p, (v, _) in grid.items() if v >= goal)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{args.sweep_dir}, {level}: {len(grid)} grid points, best {best:.1f} tok/s at steps/topk "
          f"{best_point}; within {args.within:.0%}: {near}")
    print(f"grid: {len(grid)} launches, {sum(s for _, s in grid.values()) / 60:.1f} GPU minutes "
          f"(plus {baseline_gpu_seconds(args.sweep_dir) / 60:.1f} for the baseline)")
    samplers = {"random": lambda seed: optuna.samplers.RandomSampler(seed=seed)}
    for n in (int(x) for x in args.startup.split(",") if x.strip()):
        samplers[f"TPE, {n} start-up"] = lambda seed, n=n: optuna.samplers.TPESampler(seed=seed, n_startup_trials=n)
    print(f"{'sampler':18} {'found in ' + str(args.trials) + ' trials':>18} {'launches (median)':>18} "
          f"{'GPU min (median)':>17}")
    for name, make in samplers.items():
        runs = [replay(optuna, make(seed), grid, args.trials, goal) for seed in range(args.seeds)]
        found = [(n, s) for n, s in runs if n is not None]
        launches = f"{statistics.median(n for n, _ in found):g}" if found else "-"
        minutes = f"{statistics.median(s for _, s in found) / 60:.1f}" if found else "-"
        print(f"{name:18} {len(found) / len(runs):>18.0%} {launches:>18} {minutes:>17}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
