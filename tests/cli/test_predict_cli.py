"""The predict sweep as a user runs it (``-m +sweep=predict``), against the fake server (plumbing only).

With ``FAKE_SGLANG_ACCEPT`` the fake accepts each drafted position with a fixed probability and spends
longer on a round with more steps, so that the histograms, the predictions and the cost model have
something to work on; it proves the sweeper's wiring, never SGLang's numbers.
"""

from __future__ import annotations

import json
import os

import pytest
from test_bench_cli import REPO, SERVE, WORKLOAD, output, run_cli

from automodel_spec.bench.result import read_point

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="process checks use /proc")

# 3 ms a drafting step: a round at 3 steps takes 6 ms more than at 1, well above the timing noise of a busy
# 2-core machine, so the fitted cost per step is the fake's and not the noise's
ENV = {"FAKE_SGLANG_ACCEPT": "0.6", "FAKE_SGLANG_ROUND_STEP_MS": "3", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
PREDICT = ["-m", "+sweep=predict", *WORKLOAD, "bench.name=p", "spec.num_steps=1,3", "spec.topk=1,2",
           "bench.baseline=false", "bench.num_prompts=6", "bench.max_new_tokens=32"]


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, cache):
    cwd = tmp_path_factory.mktemp("predict")
    res = run_cli(SERVE, *PREDICT, "hydra.sweeper.min_gain=-1", cwd=cwd, cache=cache, env=ENV, timeout=240)
    return res, cwd / "sweeps" / "p"


def test_measures_the_plan_first_then_confirms_what_it_predicted_best(predicted):
    res, root = predicted
    assert res.returncode == 0, output(res)
    pred = json.loads((root / "predictions.json").read_text())
    # the longest chain, the widest tree at the most steps, the fewest steps at that width
    assert pred["measured_first"] == ["3/1/4", "3/2/7", "1/2/3"]
    assert sorted(pred["grid"]) == ["1/1/2", "1/2/3", "3/1/4", "3/2/7"]
    launched = {p.name for p in root.iterdir() if (p / "metrics.json").is_file()}
    first = {"spec.num_steps=3,spec.topk=1", "spec.num_steps=3,spec.topk=2", "spec.num_steps=1,spec.topk=2"}
    assert first <= launched
    confirmed = {c["point"] for c in pred["confirmations"]}
    # with min_gain=-1 every level's predicted best that was not measured is measured: here only 1/1/2 can be
    assert confirmed <= {"1/1/2"} and (("spec.num_steps=1,spec.topk=1" in launched) == bool(confirmed))
    assert launched <= first | {"spec.num_steps=1,spec.topk=1"}


def test_the_chain_prediction_comes_from_the_longest_chains_histogram(predicted):
    res, root = predicted
    chain = read_point(root / "spec.num_steps=3,spec.topk=1" / "metrics.json")
    lv = chain.levels["T0_c1"]
    assert lv.histogram_requests == 6 and sum(lv.accept_histogram) == lv.verify_steps
    pred = json.loads((root / "predictions.json").read_text())
    one = next(p for p in pred["predictions"] if p["point"] == "1/1/2" and p["concurrency"] == 1)
    assert one["method"] == "chain: histogram" and one["source"] == "3/1/4"
    # P(accept >= 1) from the 3-step chain: the 1-step chain accepts that share of its rounds' one draft
    h = lv.accept_histogram
    p1 = 1 - h[0] / sum(h)
    assert 1.0 < one["accept_length"] < 2.0 and one["accept_length"] == pytest.approx(1 + p1, abs=0.15)
    models = pred["cost_models"]
    assert set(models) == {"1", "2"} and models["1"]["per_step_s"] > 0  # the fake's rounds grow with steps


def test_the_summary_shows_predicted_against_measured(predicted):
    res, root = predicted
    md = (root / "summary.md").read_text()
    assert "## Predicted vs measured" in md
    assert "3/1/4" in md and "chain: histogram" in md
    header = (root / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"predicted_tok_per_s", "predicted_accept_length", "prediction_method", "role"} <= set(header)


def test_print_only_shows_the_first_batch_and_writes_nothing(tmp_path, cache):
    cwd = tmp_path / "cwd"
    res = run_cli(SERVE, *PREDICT, "print_only=true", cwd=cwd, cache=cache, env=ENV)
    assert res.returncode == 0, output(res)
    assert res.stdout.count("print_only: nothing was written") == 3
    assert "--speculative-num-steps 3 --speculative-eagle-topk 2" in res.stdout
    assert not any(cwd.rglob("*")), "a print_only predict sweep wrote files"


def test_a_swept_key_other_than_the_grid_and_bad_options_are_refused_together(tmp_path, cache):
    cwd = tmp_path / "cwd"
    res = run_cli(SERVE, *PREDICT, "bench.seed=1,2", "hydra.sweeper.confirm=-1", "hydra.sweeper.min_gain=nan",
                  "hydra.sweeper.max_gpu_s=0", cwd=cwd, cache=cache, env=ENV)
    assert res.returncode == 1
    said = output(res)
    assert "error: invalid configuration (4 problem(s)):" in said and "Traceback" not in said, said
    assert "bench.seed=1,2: the predict sweep sweeps spec.num_steps and spec.topk only" in said
    assert "hydra.sweeper.confirm=-1 must be a whole number >= 0" in said
    assert "hydra.sweeper.min_gain=nan must be a finite fraction >= -1" in said
    assert "hydra.sweeper.max_gpu_s=0 must be a number of GPU seconds > 0" in said
    assert not (cwd / "sweeps").exists(), "the refused sweep made its directory"


def test_the_written_preset_is_read_back_by_the_recipe(predicted, tmp_path, cache):
    res, root = predicted
    presets = root / "presets"
    c1 = (presets / "spec_preset" / "c1.yaml").read_text()
    winner = {k: int(v) for k, v in (line.strip().split(": ") for line in c1.splitlines()
                                     if line.startswith("  ") and line.strip().split(": ")[1].isdigit())}
    serve = run_cli(SERVE, "--config-dir", str(presets), "print_only=true", "+spec_preset=c1",
                    cwd=tmp_path / "cwd", cache=cache, env=ENV)
    assert serve.returncode == 0, output(serve)
    assert (f"--speculative-num-steps {winner['num_steps']} --speculative-eagle-topk {winner['topk']} "
            f"--speculative-num-draft-tokens {winner['num_draft_tokens']}") in serve.stdout
    flags = (presets / "sglang_flags.txt").read_text()
    assert f"concurrency 1: --speculative-algorithm EAGLE3 --speculative-num-steps {winner['num_steps']}" in flags


def test_an_adaptive_preset_runs_sglangs_adaptive_mode(tmp_path, cache):
    from automodel_spec.sweep.presets import write_presets

    def row(point, steps, c, t, tps):
        return {"point": point, "status": "ok", "requested_num_steps": steps, "requested_topk": 1,
                "requested_num_draft_tokens": steps + 1, "effective_num_steps": steps, "effective_topk": 1,
                "effective_num_draft_tokens": steps + 1, "temperature": t, "concurrency": c,
                "output_tok_per_s": tps, "algorithm": "EAGLE3"}

    rows = [row("long", 7, 1, 0.0, 500.0), row("short", 1, 1, 0.0, 250.0),
            row("long", 7, 8, 0.0, 1500.0), row("short", 1, 8, 0.0, 1900.0)]
    lines = write_presets(tmp_path / "sw", rows)
    presets = tmp_path / "sw" / "presets"
    assert any("The winner changes with load: c=1: 7/1/8, c=8: 1/1/2" in line for line in lines)
    config = json.loads((presets / "adaptive_config.json").read_text())
    assert config == {"1": {"candidate_steps": [7]}, "8": {"candidate_steps": [1]}}
    serve = run_cli(SERVE, "--config-dir", str(presets), "print_only=true", "+spec_preset=adaptive",
                    cwd=tmp_path / "cwd", cache=cache, env=ENV)
    assert serve.returncode == 0, output(serve)
    assert ("--speculative-num-steps 7 --speculative-eagle-topk 1 --speculative-num-draft-tokens 8 "
            f"--speculative-adaptive --speculative-adaptive-config {presets / 'adaptive_config.json'}") in serve.stdout
    assert "SGLang's adaptive mode" in serve.stdout


def test_compare_script_reads_the_sweep_and_a_recorded_grid(predicted, tmp_path):
    import subprocess
    import sys

    res, root = predicted
    out = tmp_path / "compare.md"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "analysis" / "compare_predict.py"), str(root), "--grid",
                          str(root / "summary.csv"), "--out", str(out)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **ENV})
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "measured first: 3/1/4, 3/2/7, 1/2/3" in text
    # against itself every level's winner is the grid's best
    assert "Winner within 3% of the grid's best (grid's numbers) at 2 of 2 levels." in text
    assert "| 1/1/2 | T=0 c=1 |" in text and "chain: histogram" in text
