"""scripts/gpu/real_pair/tree_table.py: the GPU tree table's verdicts are the benchmark's own, level by level,
against the reference file of the same draft, setting and temperature (docs/benchmarks.md, "Reference
accept length"); a level without its reference is said, never judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

from automodel_spec.bench.reference import PromptReference, ReferenceResult
from automodel_spec.bench.result import LevelResult, PointResult, SpecSettings, level_key, write_point

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu" / "real_pair" / "tree_table.py"


@pytest.fixture(scope="module")
def table():
    return load_script(SCRIPT)


def _reference(path: Path, *, topk: int, nd: int | None, temperature: float) -> None:
    """Four prompts of 12 tokens; greedy: 4 rounds each (accept length 3); sampled: two generations each."""
    if temperature == 0:
        prompts = [PromptReference(f"p{i}", list(range(12)), rounds=4, histogram=[0, 1, 2, 1]) for i in range(4)]
    else:
        prompts = [PromptReference(f"p{i}", list(range(12)), rounds=12 + i % 2, histogram=[6, 4, 2, 0 + i % 2],
                                   sample_rounds=[6, 6 + i % 2]) for i in range(4)]
    result = ReferenceResult("EAGLE3", 3, topk, prompts, [], [1, 2, 3], "cpu", "float32", 1.5, num_draft_tokens=nd,
                             temperature=temperature, samples=1 if temperature == 0 else 2)
    path.write_text(json.dumps(result.to_dict()))


def _point(sweep: Path, name: str, setting: SpecSettings, served: dict[float, tuple[float, list[int]]]) -> None:
    levels = {level_key(t, 1): LevelResult(temperature=t, concurrency=1, accept_length=al, accept_histogram=h)
              for t, (al, h) in served.items()}
    (sweep / name).mkdir(parents=True)
    write_point(sweep / name / "metrics.json", PointResult(status="ok", algorithm="EAGLE3", requested=setting,
                                                           effective=setting, levels=levels))


def test_each_level_is_held_against_its_own_reference(table, tmp_path):
    refs, sweep = tmp_path / "refs", tmp_path / "sweep"
    refs.mkdir()
    _reference(refs / table.reference_name("am", 5, 4, 8, 0), topk=4, nd=8, temperature=0)
    _reference(refs / table.reference_name("am", 5, 4, 8, 1), topk=4, nd=8, temperature=1)
    _point(sweep, "tree", SpecSettings(5, 4, 8), {0.0: (2.99, [0, 4, 8, 4]), 1.0: (1.0, [40, 8, 0, 0])})
    rows = table.served_rows("am", sweep, refs)
    greedy, sampled = rows
    assert greedy["kind"] == "exact" and greedy["served_as_trained"] is True and greedy["depths_ok"] is True
    assert greedy["reference"] == pytest.approx(3.0)
    assert sampled["kind"] == "interval" and sampled["interval"][0] < sampled["reference"] < sampled["interval"][1]
    assert sampled["served_as_trained"] is False and "below the reference interval" in sampled["verdict"]
    assert table.main(["--references", str(refs), "--sweep", f"am={sweep}"]) == 1


def test_a_level_without_its_reference_is_said_not_judged(table, tmp_path, capsys):
    refs, sweep = tmp_path / "refs", tmp_path / "sweep"
    refs.mkdir()
    _point(sweep, "chain", SpecSettings(3, 1, 4), {0.0: (3.0, [0, 4, 8, 4])})
    out = tmp_path / "table.json"
    assert table.main(["--references", str(refs), "--sweep", f"sf={sweep}", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["served"]
    assert "served_as_trained" not in row and "reference-sf-3-1-4-t0.json missing" in row["verdict"]
    assert "| sf | 3/1/4 | 0 | 3.000 | - |" in capsys.readouterr().out


def test_a_sweep_that_is_not_a_directory_is_refused_by_name(table, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        table.main(["--references", str(tmp_path), "--sweep", f"am={tmp_path / 'none'}"])
    assert exc.value.code == 2 and "none" in capsys.readouterr().err


def test_nothing_measured_is_not_a_table(table, tmp_path, capsys):
    (tmp_path / "sweep").mkdir()
    assert table.main(["--references", str(tmp_path), "--sweep", f"am={tmp_path / 'sweep'}"]) == 1
    assert "nothing to hold against a reference" in capsys.readouterr().err
