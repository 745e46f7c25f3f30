"""scripts/gpu/load_fixed.py: the fixed chain and tree that gpu_load.sh's live stage serves are those a grid
predicts fastest over the whole phased run (each phase's requests at that level's speed), not the fastest at
one level."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_script

from automodel_spec.bench.result import LevelResult, PointResult, SpecSettings, level_key, write_point

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu" / "load_fixed.py"


@pytest.fixture(scope="module")
def fixed():
    return load_script(SCRIPT)


def _point(sweep: Path, setting: SpecSettings, speed: dict[int, float], temperature: float = 1.0) -> None:
    levels = {level_key(temperature, c): LevelResult(temperature=temperature, concurrency=c, output_tok_per_s=v)
              for c, v in speed.items()}
    name = sweep / f"s{setting.num_steps}-k{setting.topk}"
    name.mkdir(parents=True)
    write_point(name / "metrics.json", PointResult(status="ok", algorithm="EAGLE3", requested=setting,
                                                   effective=setting, levels=levels))


def test_the_whole_run_decides_not_one_level(fixed, tmp_path, capsys):
    sweep = tmp_path / "grid"
    # the long chain wins batch 1, the short one batch 32; batch 1 is most of the run's time
    _point(sweep, SpecSettings(5, 1, 6), {1: 300.0, 8: 1000.0, 32: 1500.0})
    _point(sweep, SpecSettings(1, 1, 2), {1: 200.0, 8: 1100.0, 32: 2500.0})
    _point(sweep, SpecSettings(3, 8, 16), {1: 250.0, 8: 900.0, 32: 1200.0})
    _point(sweep, SpecSettings(1, 8, 8), {1: 240.0, 8: 950.0})  # never measured at 32: not ranked
    assert fixed.main([str(sweep), "--phases", "[c1,c8,c32,c1]", "--num-prompts", "16"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["spec.num_steps=5 spec.topk=1 spec.num_draft_tokens=6",
                                    "spec.num_steps=3 spec.topk=8 spec.num_draft_tokens=16"]
    # 16 + 16 + 64 + 16 requests: 112 / (32/300 + 16/1000 + 64/1500) for the long chain
    assert "5/1/6, 677.4 tok/s predicted over c1 -> c8 -> c32 -> c1" in out.err


def test_a_kind_the_grid_lacks_is_said_and_nothing_at_all_is_an_error(fixed, tmp_path, capsys):
    sweep = tmp_path / "grid"
    _point(sweep, SpecSettings(3, 1, 4), {1: 300.0, 8: 1000.0})
    _point(sweep, SpecSettings(3, 8, 16), {1: 250.0, 8: 900.0}, temperature=0.0)  # not at the asked temperature
    assert fixed.main([str(sweep), "--phases", "c1,c8", "--num-prompts", "16"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["spec.num_steps=3 spec.topk=1 spec.num_draft_tokens=4"]
    assert "no tree measured at temperature 1" in out.err
    assert fixed.main([str(sweep), "--phases", "c1,c8,c32", "--num-prompts", "16"]) == 1  # nothing at 32
    assert "nothing to serve" in capsys.readouterr().err


def test_open_loop_phases_are_refused(fixed, tmp_path, capsys):
    assert fixed.main([str(tmp_path), "--phases", "c1,r2", "--num-prompts", "16"]) == 2
    assert "only closed-loop phases" in capsys.readouterr().err


def test_a_phase_that_is_no_load_and_a_missing_sweep_are_named(fixed, tmp_path, capsys):
    assert fixed.main([str(tmp_path), "--phases", "c1,cX", "--num-prompts", "16"]) == 2
    assert "--phases c1,cX: phase 'cX' is not c<N>" in capsys.readouterr().err
    assert fixed.main([str(tmp_path / "nowhere"), "--phases", "c1", "--num-prompts", "16"]) == 2
    assert "nowhere: no such sweep directory" in capsys.readouterr().err
