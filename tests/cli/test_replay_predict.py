"""``scripts/analysis/replay_predict.py`` on the recorded H100 grids: the predict sweep's driver, replayed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "analysis" / "replay_predict.py"
DATA = REPO / "docs" / "data"


def replay(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_the_spread_grid_is_found_in_a_quarter_of_its_gpu_minutes():
    out = replay(str(DATA / "2026-11-27-h100-grid-spread.csv"), "--baseline-s", "191")
    assert "16 grid points, 6 levels, 28.2 GPU minutes" in out
    assert "measured first: 7/1/8, 7/8/16, 1/8/9" in out
    assert "confirmed: 3/8/16 (contends for the best at 3 level(s)" in out
    assert "launched 4 of 16 points: 422 s = 7.0 GPU minutes = 24.9% of the grid's" in out
    assert "within 3% of the grid's best at 6 of 6 levels" in out
    # every grid point at every level has a prediction line, with how it was made
    assert out.count("fitted to measured accept lengths (no histogram") > 0
    assert sum(line.startswith("| ") and "T=" in line and "/" in line.split("|")[1] for line in out.splitlines()) \
        >= 16 * 6


def test_a_budget_is_kept_and_what_it_cost_is_said():
    out = replay(str(DATA / "2026-11-27-h100-grid-spread.csv"), "--baseline-s", "191", "--max-gpu-s", "300")
    assert "skipped: confirmation 3/8/16: the GPU budget (300 s) would be passed" in out
    assert "launched 3 of 16 points" in out


def test_the_chain_sweep_of_the_plain_pair():
    out = replay(str(DATA / "2026-11-27-h100-sweep.csv"))
    assert "measured first: 7/1/8, 1/1/2" in out and "launched 3 of 4 points" in out
    assert "not identified: per_draft_token_s" in out  # chains alone: draft tokens move with steps
