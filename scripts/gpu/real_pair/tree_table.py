"""The served-against-reference table of ``gpu_tree_table.sh``: each served level beside its reference.

The served side is the sweeps' ``metrics.json`` (run with ``bench.reference=false``); the reference side
is the JSON of ``python -m automodel_spec.bench.reference`` for the same draft, setting and temperature,
named ``reference-<draft>-<steps>-<topk>-<draft tokens>-t<temperature>.json``. The verdicts are the
benchmark's own (``served_checks.judge_level``: exact, or an interval at T > 0, and per depth),
computed here because the references ran side by side on the GPU, outside the sweeps (a sweep computes
its points' references one at a time, on a GPU where nothing starts or is measured).

    python scripts/gpu/real_pair/tree_table.py --references DIR --sweep am=sweeps/real-trees-am \\
        --sweep sf=sweeps/real-trees-sf [--checks DIR] [--json OUT]

prints a Markdown table (and the ``mode=check`` runs under ``--checks``: ``check-*/metrics.json`` with
``check-*.rc``); exits 1 when a served level fails its verdict, or when there is nothing to judge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from automodel_spec.bench import reference as ref
from automodel_spec.bench.result import read_point
from automodel_spec.bench.served_checks import judge_level


def reference_name(draft: str, num_steps: int, topk: int, num_draft_tokens: int, temperature: float) -> str:
    """The file name the shell script gives the reference of one draft, setting and temperature."""
    return f"reference-{draft}-{num_steps}-{topk}-{num_draft_tokens}-t{temperature:g}.json"


def served_rows(draft: str, sweep: Path, references: Path) -> list[dict]:
    """One row per measured level of each point of ``sweep``, held against its reference where computed."""
    rows = []
    for path in sorted(sweep.glob("*/metrics.json")):
        point = read_point(path)
        if point.status != "ok" or point.algorithm is None:
            continue
        s = point.setting
        for level in sorted(point.levels.values(), key=lambda lv: (lv.temperature, lv.concurrency)):
            row = {"draft": draft, "setting": s.label(), "temperature": level.temperature,
                   "served": level.accept_length, "served_histogram": level.accept_histogram}
            file = references / reference_name(draft, s.num_steps, s.topk or 1, s.num_draft_tokens or s.num_steps + 1,
                                               level.temperature)
            if file.is_file():
                row.update(judge(level, ref.reference_from_dict(json.loads(file.read_text()))))
            else:
                row["verdict"] = f"no reference ({file.name} missing: not finished within the call)"
            rows.append(row)
    return rows


def judge(level, computed) -> dict:
    """One served level (``LevelResult``) against a computed reference over every prompt it holds, judged by
    the benchmark's own ``judge_level``."""
    judge_level(level, computed, [p.prompt_id for p in computed.prompts])
    return {"kind": level.reference_kind, "reference": level.reference_accept_length,
            "interval": level.reference_interval, "reference_histogram": level.reference_histogram,
            "reference_seconds": round(computed.seconds, 1), "samples": computed.samples,
            "served_as_trained": level.served_as_trained, "verdict": level.reference_verdict,
            "depths_ok": level.depths_as_trained, "depth_verdict": level.depth_verdict,
            "distance": level.histogram_distance}


def check_rows(checks: Path) -> list[dict]:
    """The ``mode=check`` runs: name, exit code, and each level's reference, served value and verdict."""
    rows = []
    for rc_file in sorted(checks.glob("check-*.rc")):
        name = rc_file.name[len("check-"):-len(".rc")]
        metrics = checks / f"check-{name}" / "metrics.json"
        row = {"check": name, "exit_code": int(rc_file.read_text().strip() or -1)}
        if metrics.is_file():
            point = read_point(metrics)
            row["setting"] = point.setting.label()
            row["floor"] = point.bench.get("expected_accept_length")
            row["levels"] = [{"temperature": lv.temperature, "served": lv.accept_length,
                              "reference": lv.reference_accept_length, "kind": lv.reference_kind,
                              "verdict": lv.reference_verdict, "depth_verdict": lv.depth_verdict}
                             for lv in point.levels.values()]
        rows.append(row)
    return rows


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(rows: list[dict], checks: list[dict]) -> str:
    """The two tables as ``docs/benchmarks.md`` shows them."""
    out = ["| draft | setting | T | served | reference | kind | verdict | per depth (distance) | reference s |",
           "|---|---|---:|---:|---:|---|---|---|---:|"]
    for r in rows:
        reference = _f(r.get("reference"))
        if r.get("interval"):
            reference += f" [{_f(r['interval'][0])}, {_f(r['interval'][1])}]"
        verdict = ("served as trained" if r.get("served_as_trained") else
                   "FAILED" if r.get("served_as_trained") is False else r["verdict"])
        depth = {True: "ok", False: "short", None: "-"}[r.get("depths_ok")]
        out.append(f"| {r['draft']} | {r['setting']} | {r['temperature']:g} | {_f(r['served'])} | {reference} | "
                   f"{r.get('kind', '-')} | {verdict} | {depth} ({_f(r.get('distance'), 2)}) | "
                   f"{_f(r.get('reference_seconds'), 0)} |")
    if checks:
        out += ["", "| mode=check | setting | floor | exit | reference | served | verdict |", "|---|---|---:|---:|---:|---:|---|"]
        for c in checks:
            for lv in c.get("levels") or [{}]:
                out.append(f"| {c['check']} | {c.get('setting', '-')} | {_f(c.get('floor'))} | {c['exit_code']} | "
                           f"{_f(lv.get('reference'))} | {_f(lv.get('served'))} | {lv.get('verdict') or '-'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--references", type=Path, required=True, help="the directory of the references' JSON")
    ap.add_argument("--sweep", action="append", default=[], metavar="NAME=DIR",
                    help="a draft's name (as in the references' file names) and its sweep directory")
    ap.add_argument("--checks", type=Path, help="the directory of the mode=check runs")
    ap.add_argument("--json", type=Path, help="write the rows here too")
    args = ap.parse_args(argv)
    rows = []
    for item in args.sweep:
        name, _, directory = item.partition("=")
        if not directory or not Path(directory).is_dir():
            ap.error(f"--sweep {item}: give NAME=DIR with an existing sweep directory")
        rows += served_rows(name, Path(directory), args.references)
    checks = check_rows(args.checks) if args.checks else []
    if not rows and not checks:
        print(f"no measured level under {', '.join(args.sweep) or 'no --sweep'} and no mode=check run under "
              f"{args.checks or 'no --checks'}: nothing to hold against a reference", file=sys.stderr)
        return 1
    print(markdown(rows, checks))
    if args.json:
        args.json.write_text(json.dumps({"served": rows, "checks": checks}, indent=1) + "\n")
    return 1 if any(r.get("served_as_trained") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
