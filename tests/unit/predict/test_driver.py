"""The predict sweep's driver against a simulated server: what it launches, predicts, confirms, writes."""

from __future__ import annotations

import json
import random

import pytest

from automodel_spec.bench.result import LevelResult, PointResult
from automodel_spec.config.adaptive import read_adaptive_config
from automodel_spec.predict.driver import PredictOptions, adaptive_slots, run_predict_sweep
from automodel_spec.predict.points import grid_points

TEMPS, CONCS = (0.0, 1.0), (1, 8)


def simulate(steps: int, topk: int, tokens: int, accept=(0.95, 0.5), seconds=100.0) -> PointResult:
    """A server whose drafts are accepted per position with ``accept[T]``; rounds cost by shape and load."""
    rng = random.Random(f"{steps}/{topk}")
    levels = {}
    for t, a in zip(TEMPS, accept, strict=True):
        for c in CONCS:
            hist, rounds = [0] * (steps + 1), 0
            for _ in range(16):
                n = 1
                while n < 64:
                    k = 0
                    while k < steps and rng.random() < (a if topk == 1 else min(1.0, a + 0.3)):
                        k += 1
                    hist[k] += 1
                    n += k + 1
                    rounds += 1
            al = 16 * 64 / rounds
            # batch 8 pays more per draft step: long chains lose at load
            round_s = (7e-3 + (0.5e-3 if c == 1 else 4e-3) * steps + 0.05e-3 * tokens)
            tps = 1 / (round_s / (c * al) + 0.4e-3)
            lv = LevelResult(temperature=t, concurrency=c, requests=16, output_tokens=16 * 64, output_tok_per_s=tps,
                             accept_length=al, accept_histogram=hist, histogram_requests=16)
            levels[lv.key] = lv
    return PointResult(status="ok", levels=levels, gpu_seconds=seconds)


def make_launch(log):
    def launch(jobs):
        out = []
        for job in jobs:
            log.append(job)
            kv = dict(o.split("=", 1) for o in job)
            if kv.get("spec.adaptive") == "true":
                out.append(PointResult(status="ok", gpu_seconds=100.0))
                continue
            s, k = int(kv["spec.num_steps"]), int(kv["spec.topk"])
            out.append(simulate(s, k, s + 1 if k == 1 else min(s * k + 1, 16)))
        return out
    return launch


def test_measures_the_plan_then_confirms_and_writes_its_predictions(tmp_path):
    grid = grid_points([1, 3, 5, 7], [1, 4])
    log = []
    out = run_predict_sweep(grid, PredictOptions(confirm=2, min_gain=-1.0), make_launch(log), tmp_path)
    assert log[:3] == [["spec.num_steps=7", "spec.topk=1"], ["spec.num_steps=7", "spec.topk=4"],
                       ["spec.num_steps=1", "spec.topk=4"]]
    assert 1 <= len(out.confirmations) <= 2
    assert log[3:] == [[f"spec.num_steps={c.point.num_steps}", f"spec.topk={c.point.topk}"] for c in out.confirmations]
    pred = json.loads((tmp_path / "predictions.json").read_text())
    assert pred["measured_first"] == ["7/1/8", "7/4/16", "1/4/5"]
    assert len(pred["predictions"]) == len(grid) * len(TEMPS) * len(CONCS)
    chain = [p for p in pred["predictions"] if p["point"] == "3/1/4" and p["temperature"] == 1.0]
    assert chain and all(p["method"] == "chain: histogram" for p in chain)
    # the chain prediction from the 7-step histogram is close to a simulated 3-step chain
    truth = simulate(3, 1, 4).levels["T1_c1"].accept_length
    assert chain[0]["accept_length"] == pytest.approx(truth, rel=0.06)


def test_a_budget_stops_confirmations_and_says_so(tmp_path):
    grid = grid_points([1, 3, 5, 7], [1, 4])
    log = []
    out = run_predict_sweep(grid, PredictOptions(confirm=2, min_gain=-1.0, max_gpu_s=350.0), make_launch(log), tmp_path)
    assert len(log) == 3 and out.gpu_seconds == 300.0
    assert out.skipped and all("GPU budget (350 s)" in s for s in out.skipped)


def test_where_the_fastest_chain_changes_with_load_an_adaptive_config_is_written_and_measured(tmp_path):
    grid = grid_points([1, 3, 5, 7], [1])
    log = []
    out = run_predict_sweep(grid, PredictOptions(confirm=3, measure_adaptive=True), make_launch(log), tmp_path)
    assert out.adaptive_config is not None
    slots = read_adaptive_config(out.adaptive_config)
    assert set(slots) == {1, 8} and slots[1][0] > slots[8][0]  # more steps alone, fewer at load
    adaptive_jobs = [j for j in log if "spec.adaptive=true" in j]
    assert adaptive_jobs == [["spec.adaptive=true", f"spec.adaptive_config={out.adaptive_config}",
                              f"spec.num_steps={max(slots[1][0], slots[8][0])}", "spec.topk=1"]]


def test_adaptive_slots_put_the_lowest_load_at_batch_size_one():
    from automodel_spec.predict.points import GridPoint

    assert adaptive_slots({2: GridPoint(7, 1, 8), 16: GridPoint(1, 1, 2)}) == {1: 7, 16: 1}


def test_the_fastest_chain_by_goodput_counts_only_levels_within_the_goals():
    from automodel_spec.predict.driver import best_by_concurrency
    from automodel_spec.predict.points import GridPoint

    def point(tok_s: float, goodput: float, met: bool) -> PointResult:
        levels = {"T0_c1": LevelResult(temperature=0.0, concurrency=1, output_tok_per_s=tok_s, goodput_rps=goodput,
                                       slo_met=met),
                  # an open-loop level is reported, never ranked with the concurrencies
                  "T0_r9": LevelResult(temperature=0.0, concurrency=0, request_rate=9.0, output_tok_per_s=1e6)}
        return PointResult(status="ok", bench={"objective": "goodput"}, levels=levels)

    fast, steady = GridPoint(7, 1, 8), GridPoint(3, 1, 4)
    results = {fast: point(500.0, 9.0, False), steady: point(400.0, 2.0, True)}
    assert best_by_concurrency(results) == {1: steady}  # the faster chain missed the goals
    for r in results.values():
        r.bench = {"objective": "tok_per_s"}
    assert best_by_concurrency(results) == {1: fast}
