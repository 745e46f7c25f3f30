"""A sweep ranked by goodput within the service-level goals, from hand-written ``metrics.json``: winners, ties,
infeasible levels, open-loop levels, the phased-load table and the presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automodel_spec.bench.result import level_key
from automodel_spec.sweep.ranking import GOODPUT, TOK_PER_S, choose
from automodel_spec.sweep.summary import write_summary


def level(tok_s: float, goodput: float | None = None, met: bool | None = None, *, c: int = 1, t: float = 0.0,
          rate: float | None = None, phase: int | None = None, base_goodput: float | None = None, **extra) -> dict:
    return {"temperature": t, "concurrency": c, "request_rate": rate, "phase": phase,
            "phase_load": extra.pop("phase_load", None), "requests": 8, "output_tokens": 128,
            "wall_s": 128 / tok_s, "output_tok_per_s": tok_s, "streamed": True, "ttft_p99_s": 0.05,
            "itl_p99_s": 0.02, "tpot_p99_s": 0.01, "goodput_rps": goodput, "slo_met": met,
            "good_requests": None if goodput is None else 8,
            "slo_missed": None if met is None else ([] if met else ["itl_p99_s 50.00 ms > 40.00 ms"]),
            "baseline_goodput_rps": base_goodput, **extra}


def write_point(root: Path, name: str, steps: int, topk: int, levels: list[dict], objective: str = GOODPUT) -> None:
    d = root / name
    d.mkdir(parents=True)
    keyed = {level_key(lv["temperature"], lv["concurrency"], request_rate=lv["request_rate"], phase=lv["phase"]): lv
             for lv in levels}
    (d / "metrics.json").write_text(json.dumps({
        "schema": 3, "key": "k-" + name, "status": "ok", "algorithm": "EAGLE3",
        "requested": {"num_steps": steps, "topk": topk, "num_draft_tokens": steps * topk + 1},
        "bench": {"objective": objective, "slo": {"itl_s": 0.04}}, "levels": keyed}))


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    # c=1: the fast chain misses the goals, the tree meets them -> the tree wins on goodput
    # c=8: nobody meets the goals -> infeasible
    # 4 requests/s: two settings tie on goodput (within 1%), the faster one wins
    write_point(root, "chain", 7, 1, [level(500.0, 1.0, False), level(2000.0, 3.0, False, c=8),
                                      level(300.0, 3.99, True, c=0, rate=4.0),
                                      level(400.0, 2.0, True, phase=1, phase_load="c1", baseline_tok_per_s=350.0),
                                      level(900.0, 3.0, False, c=8, phase=2, phase_load="c8",
                                            baseline_tok_per_s=1000.0),
                                      level(700.0, 2.5, False, c=0, phase=0, phase_load="c1 -> c8",
                                            baseline_tok_per_s=800.0)])
    write_point(root, "tree", 3, 8, [level(450.0, 2.0, True), level(1500.0, 2.5, False, c=8),
                                     level(280.0, 4.0, True, c=0, rate=4.0)])
    return root


def test_goodput_winners_ties_and_infeasible_levels(sweep):
    summary = write_summary(sweep, plots=False)
    assert summary["objective"] == GOODPUT  # read from the points' bench.objective
    choices = summary["choices"]
    assert choices[(0.0, 1)].row["point"] == "tree"  # the faster chain missed the goals
    assert choices[(0.0, 8)].row is None and choices[(0.0, 8)].infeasible and choices[(0.0, 8)].closest["point"] == "chain"
    rate = choices[(0.0, 0, 4.0)]
    assert rate.row["point"] == "chain" and [r["point"] for r in rate.ties] == ["tree"]  # 3.99 vs 4.0: a tie
    md = (sweep / "summary.md").read_text()
    assert "## temperature 0, 4 requests/s" in md
    assert "No setting met the goals at temperature 0, concurrency 8 (infeasible); the highest goodput was" in md
    assert "Tied on goodput (within 1%) and chosen by tokens/s over: `spec.num_steps=3 spec.topk=8" in md
    best = (sweep / "best_override.txt").read_text().splitlines()
    assert best[0].startswith("temperature 0, concurrency 1: spec.num_steps=3 spec.topk=8")
    assert best[0].endswith("goodput 2.00 req/s within the goals")
    assert best[1] == "temperature 0, concurrency 8: (none)  # no setting met the goals (bench.slo) at this level"
    assert best[2].startswith("temperature 0, 4 requests/s: spec.num_steps=7 spec.topk=1")


def test_phases_are_a_table_of_their_own_not_levels(sweep):
    summary = write_summary(sweep, plots=False)
    assert all(len(lv) == 2 or lv[2] == 4.0 for lv in summary["choices"])  # no phase became a level
    md = (sweep / "summary.md").read_text()
    table = md[md.index("## Phased load"):].splitlines()
    assert "| setting | 1: c1 | 2: c8 | whole |" in table
    assert any(line.startswith("| `spec.num_steps=7 spec.topk=1") and "400.0, 20.0, 2.00 +" in line
               and "900.0, 20.0, 3.00 -" in line for line in table)
    assert "| no speculation (tok/s) | 350.0 | 1000.0 | 800.0 |" in table  # the shared baseline, same phases


def test_presets_follow_the_objective(sweep):
    write_summary(sweep, plots=False)
    presets = sweep / "presets" / "spec_preset"
    assert "num_steps: 3" in (presets / "c1.yaml").read_text()  # the tree met the goals at c=1
    assert not (presets / "c8.yaml").exists()  # infeasible: no preset
    assert (presets / "r4.yaml").is_file()
    md = (sweep / "summary.md").read_text()
    assert "no setting met the goals at every temperature (infeasible, no preset): concurrency 8" in md
    by_speed = write_summary(sweep, plots=False, objective=TOK_PER_S)
    assert by_speed["choices"][(0.0, 1)].row["point"] == "chain"
    assert "num_steps: 7" in (presets / "c1.yaml").read_text() and (presets / "c8.yaml").is_file()


def test_no_speculation_wins_where_it_alone_met_the_goals():
    rows = [{"point": "a", "status": "ok", "output_tok_per_s": 100.0, "goodput_rps": 1.0, "slo_met": False,
             "baseline_goodput_rps": 2.0, "temperature": 0.0, "concurrency": 1}]
    choice = choose(rows, GOODPUT)
    assert choice.infeasible and choice.baseline_wins
    met = [{**rows[0], "slo_met": True, "goodput_rps": 1.99}]
    assert not choose(met, GOODPUT).baseline_wins  # within 1% of no speculation: kept
