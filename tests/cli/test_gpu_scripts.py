"""The GPU machine's scale-out scripts, run in their dry mode on the CPU (the fake server, a fake
nvidia-smi with two GPUs): their steps, signals, bookkeeping and tables, never serving itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks use /proc")


def _run(script: str, *args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_SGLANG_", "AUTOMODEL_SPEC_", "HYDRA_"))}
    full.update({"OUT": str(tmp_path / "out"), "AUTOMODEL_SPEC_CACHE": str(tmp_path / "cache"), **env})
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu" / script), *args], env=full, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", ["gpu_scale.sh", "gpu_sweep_scale.sh", "gpu_speed.sh", "gpu_load.sh",
                                    "real_pair/gpu_real_pair.sh", "real_pair/gpu_tree_table.sh",
                                    "gpu_producers.sh", "_producer_wheels.sh", "_sglang_bundle.sh"])
def test_the_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu" / script)]).returncode == 0


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> SimpleNamespace:
    """What both dry runs build alike, built once for the module (it runs whole on one worker,
    tests/conftest.py): the tiny pair (scripts/gpu/build_bench_pair.py, ~2.5 s of CPU) and its export
    (the first server's recipe imports torch for it). gpu_scale.sh builds it as ``scale-tiny`` under
    SCALE_PAIRS and gpu_sweep_scale.sh as ``sweep-scale-tiny`` under SWEEP_PAIRS, with the same arguments:
    one is a link to the other, and whichever script runs first builds it (the other finds it built)."""
    root = tmp_path_factory.mktemp("gpu-scripts")
    (root / "pairs" / "scale-tiny").mkdir(parents=True)
    (root / "pairs" / "sweep-scale-tiny").symlink_to("scale-tiny")
    return SimpleNamespace(pairs=root / "pairs", cache=root / "cache")


def test_gpu_scale_dry_run_measures_both_tp_sizes_and_every_signal(tmp_path, shared):
    # a short workload (the script's knobs; 128 tokens x 16 prompts by default): what is checked is its steps
    # and table, and the fake's accept length at 3 steps is 4.00 at any length that is a multiple of 4
    res = _run("gpu_scale.sh", tmp_path=tmp_path, SCALE_DRY="1", SCALE_PAIRS=str(shared.pairs),
               AUTOMODEL_SPEC_CACHE=str(shared.cache), SCALE_PROMPTS="4", SCALE_TOKENS="16")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = (tmp_path / "out" / "scale" / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert [r.split("|")[1:3] for r in rows] == [[" 1 ", " 1 "], [" 1 ", " 8 "], [" 2 ", " 1 "], [" 2 ", " 8 "]], table
    assert all(" 4.00 " in r for r in rows)  # the fake's accept length at 3 steps
    assert rows[2].rstrip(" |").endswith("0,1")  # tp 2 ran on both GPUs
    life = (tmp_path / "out" / "scale" / "lifecycle.txt").read_text().splitlines()
    assert [line.split()[0] for line in life] == ["SIGINT", "SIGTERM", "SIGKILL"]
    assert [line.split()[3].rstrip(",") for line in life] == ["130", "143", "137"]
    assert all(line.endswith(" ok") for line in life), life


def test_gpu_sweep_scale_dry_run_reports_wall_time_and_gpu_minutes(tmp_path, shared):
    # a short workload and the fake's default boot (the script's knobs; 8 prompts x 64 tokens and a 1 s boot by
    # default): what is checked is its bookkeeping, not the figures
    res = _run("gpu_sweep_scale.sh", "2", tmp_path=tmp_path, SWEEP_DRY="1", SWEEP_PAIRS=str(shared.pairs),
               AUTOMODEL_SPEC_CACHE=str(shared.cache),
               SWEEP_DIR=str(tmp_path / "sweeps"), SWEEP_GRID="spec.num_steps=1,3 spec.topk=1", SWEEP_PROMPTS="4",
               SWEEP_TOKENS="16", FAKE_SGLANG_BOOT_S="0.2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = (tmp_path / "out" / "sweep-scale-2" / "result.md").read_text()
    row = next(line for line in result.splitlines() if line.startswith("| 2 |"))
    assert row.split("|")[2:4] == [" 0 ", " 2 / 2 "], result
    assert "best:\ntemperature 0, concurrency 1: " in result
    assert (tmp_path / "sweeps" / "scale-2" / "summary.md").is_file()
