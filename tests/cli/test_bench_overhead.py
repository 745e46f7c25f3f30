"""``scripts/gpu/bench_overhead.py`` against the fake server: alternated rounds and their summary (plumbing only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import load_script
from test_bench_cli import FAKE, REPO

SCRIPT = REPO / "scripts" / "gpu" / "bench_overhead.py"




def test_summary_pairs_each_round_and_reports_mean_stdev_and_error():
    rows = [{"round": 0, "path": "hand", "ready_s": 60.0, "tok_per_s": 400.0},
            {"round": 0, "path": "ours", "ready_s": 62.0, "tok_per_s": 396.0},
            {"round": 1, "path": "ours", "ready_s": 61.0, "tok_per_s": 404.0},
            {"round": 1, "path": "hand", "ready_s": 60.0, "tok_per_s": 400.0}]
    s = load_script(SCRIPT).summarize(rows)
    assert s["rounds"] == 2
    assert s["throughput_ratio"]["values"] == pytest.approx([0.99, 1.01])
    assert s["throughput_ratio"]["mean"] == pytest.approx(1.0)
    assert s["throughput_ratio"]["stdev"] == pytest.approx(0.02 ** 0.5 * 0.1)
    assert s["ready_delta_s"]["mean"] == pytest.approx(1.5) and s["ready_delta_s"]["sem"] == pytest.approx(0.5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fake server's process handling")
def test_alternated_rounds_against_the_fake_server_resumed_where_they_stopped(tmp_path, cache):
    demo = cache / "demo" / "v1"
    env = {**os.environ, "AUTOMODEL_SPEC_CACHE": str(cache), "OUT": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, str(SCRIPT), "--draft", str(demo / "eagle3-run"), "--target", str(demo / "target"),
            "--python", str(FAKE), "--prompts", "2", "--max-new-tokens", "8", "--resume", str(tmp_path / "overhead.json")]

    def run(*more):
        res = subprocess.run([*argv, *more], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        return res, json.loads((tmp_path / "overhead.json").read_text())

    _, first = run("--rounds", "1")  # a call cut short after one round
    assert [(x["round"], x["path"]) for x in first["rounds"]] == [(0, "hand"), (0, "ours")]
    res, data = run("--rounds", "2")
    assert [(x["round"], x["path"]) for x in data["rounds"]] == [(0, "hand"), (0, "ours"), (1, "ours"), (1, "hand")]
    assert data["rounds"][:2] == first["rounds"]  # kept, not measured again
    assert data["summary"]["rounds"] == 2 and data["summary"]["throughput_ratio"]["mean"] > 0
    assert "throughput ratio ours/hand over 2 round(s): mean" in res.stdout
    assert "fewer than 4 rounds" in res.stderr
    res, late = run("--rounds", "3", "--deadline-s", "0")  # past its deadline: no server is started
    assert late["rounds"] == data["rounds"] and "deadline: round 2 hand not started" in res.stderr
