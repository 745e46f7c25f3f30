"""scripts/analysis/replay_search.py on a small measured grid written in the sweep layout.

The script's ``main`` runs in this process (as the recipes' jobs do in ``helpers.run_recipe``): a process of
its own would import Optuna again for each run (~2 s of CPU), where this module's worker imports it once
(the module runs on one pytest-xdist worker, tests/conftest.py). The refusal runs as a user runs it, in a
process of its own, for the command line and its exit code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import load_script

# A skip mark rather than pytest.importorskip: importing optuna at collection costs every pytest-xdist
# worker its import (~1.9 s of CPU), also the workers that never run these tests.
pytestmark = [pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna is not installed"),
              # Optuna's import in this process: SQLAlchemy's notice about a call inside Optuna, not ours
              pytest.mark.filterwarnings("ignore:.*declarative_base:DeprecationWarning")]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "analysis" / "replay_search.py"
TOK_S = {(1, 1): 100.0, (1, 2): 150.0, (3, 1): 200.0, (3, 2): 400.0}


def _point(root: Path, steps, topk, tok_s: float, gpu_seconds: float = 60.0) -> None:
    d = root / f"spec.num_steps={steps},spec.topk={topk}"
    d.mkdir(parents=True)
    level = {"temperature": 0.0, "concurrency": 1, "output_tok_per_s": tok_s}
    (d / "metrics.json").write_text(json.dumps({
        "schema": 3, "key": d.name, "status": "ok", "requested": {"num_steps": steps, "topk": topk},
        "levels": {"T0_c1": level}, "gpu_seconds": gpu_seconds}))


@pytest.fixture
def grid(tmp_path) -> Path:
    root = tmp_path / "sweeps" / "g"
    for (steps, topk), tok_s in TOK_S.items():
        _point(root, steps, topk, tok_s)
    _point(root, None, None, 999.0)  # SGLang's own choice: measured beside the grid, not part of it
    return root


def replay_process(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def replay(monkeypatch, capsys):
    """Factory: ``replay_search.py ARGS`` in this process; its exit code and what it printed (``returncode``,
    ``stdout``, ``stderr``)."""
    script = load_script(SCRIPT)

    def run(*args: str) -> SimpleNamespace:
        monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
        code = script.main()
        printed = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)

    return run


def _found(stdout: str, sampler: str) -> int:
    line = next(line for line in stdout.splitlines() if line.startswith(sampler))
    return int(re.search(r"(\d+)%", line).group(1))


def test_names_the_grid_best_and_what_the_grid_cost(grid, replay):
    res = replay(str(grid), "--seeds", "3")
    assert res.returncode == 0, res.stderr
    assert "4 grid points, best 400.0 tok/s at steps/topk (3, 2); within 3%: [(3, 2)]" in res.stdout
    assert "grid: 4 launches, 4.0 GPU minutes (plus 0.0 for the baseline)" in res.stdout


def test_anything_counts_when_any_point_is_close_enough(grid, replay):
    res = replay(str(grid), "--within", "1.0", "--seeds", "3", "--trials", "2")
    assert res.returncode == 0, res.stderr
    random_line = next(line for line in res.stdout.splitlines() if line.startswith("random"))
    assert random_line.split()[1:] == ["100%", "1", "1.0"]  # found at once: one launch of 60 s


def test_one_trial_finds_the_single_best_point_only_sometimes(grid, replay):
    res = replay(str(grid), "--within", "0", "--seeds", "40", "--trials", "1", "--startup", "10")
    assert res.returncode == 0, res.stderr
    assert 0 < _found(res.stdout, "random") < 100
    assert 0 < _found(res.stdout, "TPE, 10 start-up") < 100


def test_a_level_the_sweep_did_not_measure_is_refused(grid):
    res = replay_process(str(grid), "--temperature", "0.5")  # the command line, as a user runs it
    assert res.returncode == 1
    assert "no measured grid point at temperature 0.5, concurrency 1" in res.stderr
