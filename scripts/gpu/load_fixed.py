#!/usr/bin/env python3
"""The best fixed chain and the best fixed tree of a load grid for a phased load, as serve.py overrides.

    python3 scripts/gpu/load_fixed.py sweeps/load-grid --phases c1,c8,c32,c1 --num-prompts 16 [--temperature 1]

Prints one line per setting (the chain first, then the tree; a kind the grid lacks is said and left out):
the overrides that serve it, e.g.
``spec.num_steps=3 spec.topk=1 spec.num_draft_tokens=4``. ``scripts/gpu/gpu_load.sh live`` serves those two
under the phased load instead of every grid point, so that the live stage fits one call.

"Best" is for the whole phased run, predicted from the grid's closed-loop levels: a phase at concurrency
c sends n_c requests (``workload.closed_loop_requests``), so with r_c the setting's tokens/s at that
level the run's tokens/s is sum(n_c) / sum(n_c / r_c) (the same tokens a request). A setting not measured
at every phase's concurrency is not ranked. Exit 1, saying why, when nothing is ranked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from automodel_spec.bench.phases import closed_loop_concurrencies  # noqa: E402
from automodel_spec.bench.workload import closed_loop_requests  # noqa: E402
from automodel_spec.sweep.rows import collect_rows, is_auto, is_closed_loop, setting_of  # noqa: E402


def whole_run_tok_per_s(rows: list[dict], concurrencies: list[int], num_prompts: int, temperature: float) -> dict:
    """Per (steps, topk, draft tokens): the phased run's predicted tokens/s, for settings measured at every phase."""
    by_setting: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if (r.get("status") == "ok" and is_closed_loop(r) and not is_auto(r) and not r.get("requested_adaptive")
                and r.get("temperature") == temperature and r.get("output_tok_per_s")):
            by_setting.setdefault(setting_of(r), {})[int(r["concurrency"])] = float(r["output_tok_per_s"])
    whole = {}
    for setting, speed in by_setting.items():
        if all(c in speed for c in concurrencies):
            requests = {c: closed_loop_requests(num_prompts, c) for c in concurrencies}
            whole[setting] = (sum(requests[c] for c in concurrencies)
                              / sum(requests[c] / speed[c] for c in concurrencies))
    return whole


def overrides(setting: tuple) -> str:
    steps, topk, tokens = setting
    return f"spec.num_steps={steps} spec.topk={topk} spec.num_draft_tokens={tokens}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--phases", required=True, help="the phased load, e.g. c1,c8,c32,c1 (closed-loop phases only)")
    ap.add_argument("--num-prompts", type=int, required=True)
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args(argv)
    if not args.sweep.is_dir():
        print(f"{args.sweep}: no such sweep directory: give the grid stage's (sweeps/load-grid)", file=sys.stderr)
        return 2
    phases = [p.strip() for p in args.phases.strip("[]").split(",") if p.strip()]
    try:
        concurrencies = closed_loop_concurrencies(phases)
    except ValueError as exc:
        print(f"--phases {args.phases}: {exc}", file=sys.stderr)
        return 2
    if len(concurrencies) != len(phases):
        print(f"--phases {args.phases}: only closed-loop phases (c<N>) can be predicted from a grid's levels",
              file=sys.stderr)
        return 2
    whole = whole_run_tok_per_s(collect_rows(args.sweep), concurrencies, args.num_prompts, args.temperature)
    lines = []
    for kind, pick in (("chain", lambda s: s[1] == 1), ("tree", lambda s: (s[1] or 0) > 1)):
        ranked = sorted((v, s) for s, v in whole.items() if pick(s))
        if not ranked:
            print(f"{args.sweep}: no {kind} measured at temperature {args.temperature:g} and every concurrency "
                  f"of {sorted(set(concurrencies))} (a grid without one, or not run to its end)", file=sys.stderr)
            continue
        value, setting = ranked[-1]
        print(f"best fixed {kind}: {setting[0]}/{setting[1]}/{setting[2]}, {value:.1f} tok/s predicted over "
              f"{' -> '.join(phases)}", file=sys.stderr)
        lines.append(overrides(setting))
    if not lines:
        print(f"{args.sweep}: nothing to serve: run the grid stage to its end first", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
