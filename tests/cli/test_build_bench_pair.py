"""scripts/gpu/build_bench_pair.py (tiny shape, CPU): build once, reuse, refuse a mismatch.

The script's ``main`` runs in this process (as the recipes' jobs do in ``helpers.run_recipe``): a process of
its own would import torch again for each run (~1.3 s of CPU), where this worker has it already. The reuse
runs as a user runs it, in a process of its own, for the command line and its exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import load_script

from automodel_spec.draft.resolve import resolve_draft

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu" / "build_bench_pair.py"


build_bench_pair = load_script(SCRIPT)


def _argv(out: Path, *args: str) -> list[str]:
    return ["--out", str(out), "--shape", "tiny", "--device", "cpu", "--draft-vocab", "256", *args]


def build_process(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(SCRIPT), *_argv(out, *args)], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture
def build(monkeypatch, capsys):
    """Factory: ``build_bench_pair.py --out OUT --shape tiny --device cpu --draft-vocab 256 ARGS`` in this
    process; its exit code and what it printed (``returncode``, ``stdout``, ``stderr``)."""

    def run(out: Path, *args: str) -> SimpleNamespace:
        monkeypatch.setattr(sys, "argv", [str(SCRIPT), *_argv(out, *args)])
        code = build_bench_pair.main()
        printed = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)

    return run


def test_builds_once_in_the_automodel_layout_then_reuses(tmp_path, build):
    out = tmp_path / "pair"
    first = build(out, "--spread", "4", "--spread-gap", "0.5")
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "pair.json").read_text()) == {
        "shape": "tiny", "draft_vocab": 256, "logit_scale": 1.0, "spread": 4, "spread_gap": 0.5}
    assert (out / "target" / "config.json").is_file()
    assert resolve_draft(str(out / "run")).model_dir.name == "consolidated"
    stamp = (out / "target" / "model.safetensors").stat().st_mtime_ns
    again = build_process(out, "--spread", "4", "--spread-gap", "0.5")  # the command line, as a user runs it
    assert again.returncode == 0 and again.stdout.startswith("exists:")
    assert (out / "target" / "model.safetensors").stat().st_mtime_ns == stamp


def test_another_pair_in_the_same_place_is_refused_not_reused(tmp_path, build):
    out = tmp_path / "pair"
    assert build(out).returncode == 0
    other = build(out, "--spread", "4")
    assert other.returncode == 1
    assert f"{out} holds another pair" in other.stderr and "Use another --out or delete it" in other.stderr


def test_groups_must_fit_the_draft_vocabulary(tmp_path, build):
    res = build(tmp_path / "pair", "--spread", "3")
    assert res.returncode == 2 and "--spread 3 must be >= 1 and divide --draft-vocab 256" in res.stderr
    assert not (tmp_path / "pair").exists()
