"""The typed result schema: written and read back, anything else (another schema too) refused by name."""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import pytest

from automodel_spec.bench.result import (
    CategoryResult,
    LevelResult,
    PointResult,
    ResultSchemaError,
    SpecSettings,
    read_point,
    write_point,
)
from automodel_spec.sweep.rows import COLUMNS, point_rows, read_rows, write_rows

DOCS = Path(__file__).resolve().parents[3] / "docs" / "data"


def full_point() -> PointResult:
    lv = LevelResult(temperature=0.5, concurrency=8, requests=16, output_tokens=2048, wall_s=1.5,
                     output_tok_per_s=1365.3, accept_length=2.5, accept_histogram=[3, 2, 1], histogram_requests=16,
                     by_category={"math": CategoryResult(requests=3, output_tokens=384, verify_steps=128,
                                                         accept_length=3.0)})
    return PointResult(status="ok", key="k", algorithm="EAGLE3", requested=SpecSettings(3, 1, 4),
                       effective=SpecSettings(3, 1, 4), server_settings={"attention_backend": "triton"},
                       levels={lv.key: lv}, gpu_seconds=90.0, gpu=["H100"])


def test_a_point_round_trips(tmp_path):
    write_point(tmp_path / "metrics.json", full_point())
    assert read_point(tmp_path / "metrics.json") == full_point()
    assert json.loads((tmp_path / "metrics.json").read_text())["schema"] == 3


@pytest.mark.parametrize("data, message", [
    ({"schema": 4, "status": "ok"}, "schema 4 is not one this automodel-spec reads"),
    ({"schema": 3, "status": "ok", "tok_s": 1}, "unknown key(s) tok_s for PointResult"),
    ({"schema": 3, "status": "done"}, "status 'done' is not one of ok, invalid, failed"),
    ({"schema": 3, "status": "ok", "levels": {"T0_c1": {"temperature": 0, "concurrency": 1, "tok_s": 3}}},
     "levels.T0_c1: unknown key(s) tok_s for LevelResult"),
    ({"schema": 3, "status": "ok", "levels": {"T0_c1": {"concurrency": 1}}}, "missing key(s) temperature"),
    ({"status": "ok", "spec": {"num_steps": 5}}, "schema 2 is not one this automodel-spec reads (3)"),
    ([1, 2], "a benchmark result is a JSON object"),
    ({"schema": 3, "status": "ok", "levels": [1]}, "levels=[1] is not a JSON object"),
    ({"schema": 3, "status": 3}, "status=3 is not a string"),
    ({"schema": 3, "status": "ok", "gpu": "H100"}, 'gpu="H100" is not a list of str values'),
    ({"schema": 3, "status": "ok", "boot_s": "fast"}, 'boot_s="fast" is not a number'),
    ({"schema": 3, "status": "ok", "requested": {"num_steps": 2.5}}, "requested: num_steps=2.5 is not a whole number"),
    ({"schema": 3, "status": "ok", "levels": {"T0_c1": {"temperature": 0, "concurrency": 1,
                                                        "output_tok_per_s": float("nan")}}},
     "levels.T0_c1: output_tok_per_s=NaN is not a finite number"),
    ({"schema": 3, "status": "ok", "levels": {"T0_c1": {"temperature": 0, "concurrency": 1, "by_category": []}}},
     "by_category=[] is not a JSON object"),
])
def test_anything_else_is_refused_naming_the_file_and_key(tmp_path, data, message):
    (tmp_path / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(ResultSchemaError) as err:
        read_point(tmp_path / "metrics.json")
    assert message in str(err.value) and str(tmp_path / "metrics.json") in str(err.value)


def test_every_field_is_a_column_and_a_stray_key_fails_loudly(tmp_path):
    for f in fields(LevelResult):
        assert f.name in COLUMNS
    for f in fields(SpecSettings):
        assert f"requested_{f.name}" in COLUMNS and f"effective_{f.name}" in COLUMNS
    rows = point_rows("p", full_point())
    write_rows(tmp_path / "s.csv", rows)
    back = read_rows(tmp_path / "s.csv")
    assert back[0]["accept_histogram"] == [3, 2, 1]
    assert back[0]["by_category"]["math"]["accept_length"] == 3.0
    assert back[0]["requested_adaptive"] is False and back[0]["effective_num_draft_tokens"] == 4
    with pytest.raises(ValueError, match="renamed_key"):
        write_rows(tmp_path / "t.csv", [{**rows[0], "renamed_key": 1}])


def test_recorded_summaries_are_read_typed_and_an_unknown_column_refused(tmp_path):
    rows = read_rows(DOCS / "2026-11-27-h100-grid-spread.csv")
    r = rows[0]
    assert (r["requested_num_steps"], r["effective_num_steps"], r["concurrency"]) == (1, 1, 1)
    assert isinstance(r["output_tok_per_s"], float) and r["accept_histogram"] is None
    with open(tmp_path / "odd.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["point", "status", "tok_per_second"])
        w.writerow(["p", "ok", "3"])
    with pytest.raises(ResultSchemaError, match="unknown column\\(s\\) tok_per_second"):
        read_rows(tmp_path / "odd.csv")


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.mkdir(), "is a directory, not a benchmark result file"),
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_text('{"status": "ok", "lev'), "is not valid JSON"),
    (lambda p: p.write_bytes(b"\xff\xfe"), "cannot read a benchmark result"),
])
def test_a_damaged_file_is_refused_with_its_reason(tmp_path, damage, message):
    damage(tmp_path / "metrics.json")
    with pytest.raises(ResultSchemaError, match=message):
        read_point(tmp_path / "metrics.json")
