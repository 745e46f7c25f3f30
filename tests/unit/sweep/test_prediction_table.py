"""A predict sweep's predictions beside its measurements (``sweep/predictions.py``, to be
``sweep/prediction_table.py``).

``predictions.json`` is written by the predict sweep's own writer (``predict.driver.write_predictions``) from
the real dataclasses, and the rows have the summary's columns (``sweep.rows.COLUMNS``). Checked: the file
is read back, and a damaged one is refused with the reason (never a crash deep in the summary); each row
gets its role and, for closed-loop levels only, its prediction; the summary section lists the cost models
(by concurrency as a number), the skipped work, one table per level sorted by predicted speed, the
relative errors, and the median error over the confirmed points only.
"""

from __future__ import annotations

import json
import os

import pytest

from automodel_spec.bench.result import MAX_RESULT_BYTES, ResultSchemaError
from automodel_spec.predict.cost import CostModel
from automodel_spec.predict.driver import PREDICTIONS, PredictOutcome, write_predictions
from automodel_spec.predict.points import Candidate, GridPoint
from automodel_spec.predict.predictor import CHAIN, MEASURED, Prediction
from automodel_spec.sweep.prediction_table import (
    CONFIRMED,
    FIRST,
    attach_predictions,
    number,
    percent,
    prediction_lines,
    read_predictions,
    relative_error,
)
from automodel_spec.sweep.rows import COLUMNS

LONG, SHORT, SHORTEST, DEEP = GridPoint(3, 1, 4), GridPoint(2, 1, 3), GridPoint(1, 1, 2), GridPoint(5, 1, 6)


def model(c: int, unidentified: list[str] | None = None) -> CostModel:
    return CostModel(concurrency=c, intercept_s=0.01, per_step_s=0.002, per_draft_token_s=0.0005, per_token_s=0.0001,
                     observations=3, rms_relative_error=0.031, unidentified=unidentified or [])


def outcome(confirm: bool = True) -> PredictOutcome:
    """3/1/4 measured first, 2/1/3 confirmed, 1/1/2 only predicted, 5/1/6 not predictable; two levels."""
    preds = [Prediction(LONG, 0.0, 1, 3.0, 100.0, MEASURED, "3/1/4"),
             Prediction(SHORTEST, 0.0, 1, 1.8, 90.0, CHAIN, "3/1/4"),
             Prediction(SHORT, 0.0, 1, 2.5, 110.0, CHAIN, "3/1/4"),
             Prediction(DEEP, 0.0, 1, None, None, "not predicted: deeper than the measured 3/1/4", None),
             Prediction(LONG, 1.0, 1, 2.0, 80.0, MEASURED, "3/1/4")]
    picks = [Candidate(SHORT, ((0.0, 1),), 0.1)] if confirm else []
    return PredictOutcome(grid=[SHORTEST, SHORT, LONG, DEEP], first=[LONG], predictions=preds,
                          models={10: model(10), 1: model(1, ["per_draft_token_s"])}, confirmations=picks,
                          results={}, skipped=["confirmation 1/1/2: the GPU budget (60 s) would be passed"])


def row(point: GridPoint | None, temperature=0.0, concurrency=1, **fields) -> dict:
    """A summary row of one point and level (the requested setting; ``None``: SGLang chose it)."""
    r = dict.fromkeys(COLUMNS)
    r.update(point=point.label if point else "auto", status="ok", temperature=temperature, concurrency=concurrency)
    if point is not None:
        r.update(requested_num_steps=point.num_steps, requested_topk=point.topk,
                 requested_num_draft_tokens=point.num_draft_tokens)
    r.update(fields)
    return r


@pytest.fixture
def sweep_dir(tmp_path):
    write_predictions(tmp_path, outcome())
    return tmp_path


def test_another_kind_of_sweep_has_no_predictions(tmp_path):
    assert read_predictions(tmp_path) is None
    rows = [row(LONG, accept_length=3.0)]
    before = [dict(r) for r in rows]
    attach_predictions(rows, None)
    assert rows == before and prediction_lines(rows, None) == []


def test_the_written_file_is_read_back(sweep_dir):
    pred = read_predictions(sweep_dir)
    assert pred == json.loads((sweep_dir / PREDICTIONS).read_text())
    assert pred["measured_first"] == ["3/1/4"] and [c["point"] for c in pred["confirmations"]] == ["2/1/3"]
    assert sorted(pred["cost_models"]) == ["1", "10"]


def _edit(sweep_dir, change) -> None:
    path = sweep_dir / PREDICTIONS
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("predictions"), r"predictions is missing or not a JSON array"),
    (lambda d: d.update(cost_models=[]), r"cost_models is missing or not a JSON object"),
    (lambda d: d.update(measured_first=[3]), r"measured_first is not a list of point names"),
    (lambda d: d["confirmations"].append({"levels": []}), r"a confirmation has no point name"),
    (lambda d: d.update(skipped="none"), r"skipped is not a list"),
    (lambda d: d["predictions"][1].update(tok_per_s="fast"), r"predictions\[1\]\.tok_per_s=\"fast\" is missing"),
    (lambda d: d["predictions"][0].update(concurrency=True), r"predictions\[0\]\.concurrency=true"),
    (lambda d: d["predictions"][0].pop("method"), r"predictions\[0\]\.method=null is missing"),
    (lambda d: d["predictions"].append(7), r"predictions\[5\] is not a JSON object"),
    (lambda d: d["cost_models"].update(c4=d["cost_models"]["1"]), r"cost_models has a key 'c4' that is not a conc"),
    (lambda d: d["cost_models"]["1"].update(observations=3.0), r"cost_models\['1'\]\.observations=3\.0"),
    (lambda d: d["cost_models"]["1"].update(unidentified=None), r"cost_models\['1'\]\.unidentified=null"),
])
def test_a_damaged_file_is_refused_with_what_is_wrong(sweep_dir, change, message):
    _edit(sweep_dir, change)
    with pytest.raises(ResultSchemaError, match=message) as err:
        read_predictions(sweep_dir)
    assert "damaged or edited by hand" in str(err.value) and PREDICTIONS in str(err.value)


def test_a_value_json_cannot_hold_is_refused(sweep_dir):
    # Python's json reads NaN; the table would print "nan" as a prediction
    path = sweep_dir / PREDICTIONS
    path.write_text(path.read_text().replace('"accept_length": 3.0', '"accept_length": NaN', 1))
    with pytest.raises(ResultSchemaError, match=r"predictions\[0\]\.accept_length=NaN"):
        read_predictions(sweep_dir)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_text("{ half"), r"cannot be read"),
    (lambda p: p.write_bytes(b'{"a": "\xff"}'), r"cannot be read"),
    (lambda p: p.write_text("[]"), r"is not a JSON object"),
    (lambda p: p.mkdir(), r"is not a regular file"),
    (lambda p: p.symlink_to(p.parent / "gone.json"), r"is not a regular file"),
    # sparse: the size without the disk space
    (lambda p: (p.touch(), os.truncate(p, MAX_RESULT_BYTES + 1)), r"is larger than 64 MiB"),
])
def test_a_file_that_is_not_predictions_is_refused(tmp_path, make, message):
    make(tmp_path / PREDICTIONS)
    with pytest.raises(ResultSchemaError, match=message):
        read_predictions(tmp_path)


def test_rows_get_their_role_and_closed_loop_predictions(sweep_dir):
    pred = read_predictions(sweep_dir)
    rows = [row(LONG), row(SHORT), row(SHORTEST), row(LONG, temperature=1.0),
            row(LONG, concurrency=8),  # a level no prediction was made for
            row(LONG, request_rate=5.0),  # open loop: predictions are of the closed-loop levels only
            row(LONG, phase=1, phase_load="c1"),  # a phase of a phased load is no level
            row(None),  # SGLang's own choice: not a grid point
            row(LONG, requested_adaptive=True)]
    attach_predictions(rows, pred)
    assert [r["role"] for r in rows] == [FIRST, CONFIRMED, None, FIRST, FIRST, FIRST, FIRST, None, None]
    assert (rows[0]["predicted_accept_length"], rows[0]["predicted_tok_per_s"], rows[0]["prediction_method"]) == \
        (3.0, 100.0, MEASURED)
    assert (rows[1]["predicted_tok_per_s"], rows[2]["predicted_tok_per_s"], rows[3]["predicted_tok_per_s"]) == \
        (110.0, 90.0, 80.0)
    for r in rows[4:]:
        assert r["predicted_tok_per_s"] is None and r["prediction_method"] is None


def test_the_effective_setting_is_what_is_matched(sweep_dir):
    # the server reported running 2/1/3 where 3/1/4 was asked: the row is the 2/1/3 point
    rows = [row(LONG, effective_num_steps=2, effective_topk=1, effective_num_draft_tokens=3)]
    attach_predictions(rows, read_predictions(sweep_dir))
    assert rows[0]["role"] == CONFIRMED and rows[0]["predicted_tok_per_s"] == 110.0


def test_the_summary_section_lists_models_skips_and_one_table_per_level(sweep_dir):
    rows = [row(LONG, accept_length=3.0, output_tok_per_s=104.0), row(SHORT, accept_length=2.0, output_tok_per_s=100.0),
            row(SHORTEST, status="failed", accept_length=9.0, output_tok_per_s=9.0)]  # failed: not a measurement
    lines = prediction_lines(rows, read_predictions(sweep_dir))
    assert lines[:2] == ["## Predicted vs measured", ""]
    assert lines[2].startswith("Measured first: 3/1/4; confirmed: 2/1/3. Predictions were made from the points")
    models = [line for line in lines if line.startswith("- cost model")]
    # by concurrency as a number: 1 before 10 before ... (as text, "10" < "4" would reorder them)
    assert models == [
        "- cost model at concurrency 1: round = 10.00 ms + 2.00 ms/step + 0.500 ms/draft token; 0.100 ms per output "
        "token; fit error (rms) 3.1% over 3 levels; not identified: per_draft_token_s",
        "- cost model at concurrency 10: round = 10.00 ms + 2.00 ms/step + 0.500 ms/draft token; 0.100 ms per output "
        "token; fit error (rms) 3.1% over 3 levels",
    ]
    assert "- skipped: confirmation 1/1/2: the GPU budget (60 s) would be passed" in lines
    at = lines.index("### temperature 0, concurrency 1")
    table = lines[at + 4:at + 8]
    assert table == [  # fastest predicted first, the unpredictable last
        "| 2/1/3 | confirmed | 2.50 | 2.00 | +25.0% | 110.0 | 100.0 | +10.0% | chain: histogram |",
        "| 3/1/4 | measured first | 3.00 | 3.00 | +0.0% | 100.0 | 104.0 | -3.8% | measured |",
        "| 1/1/2 | predicted only | 1.80 | - | - | 90.0 | - | - | chain: histogram |",
        "| 5/1/6 | predicted only | - | - | - | - | - | - | not predicted: deeper than the measured 3/1/4 |",
    ]
    assert lines.index("### temperature 1, concurrency 1") > at
    # out of sample: the confirmed point's errors only (the point measured first fits itself)
    assert "Confirmed points (out of sample): median |error| accept length 25.0%, tokens/s 10.0%." in lines


def test_without_confirmations_no_out_of_sample_error_is_claimed(tmp_path):
    write_predictions(tmp_path, outcome(confirm=False))
    rows = [row(LONG, accept_length=3.0, output_tok_per_s=104.0), row(SHORT, accept_length=2.0, output_tok_per_s=100.0)]
    lines = prediction_lines(rows, read_predictions(tmp_path))
    assert "; confirmed: none." in lines[2]
    assert not any(line.startswith("Confirmed points") for line in lines)
    assert any(line.startswith("| 2/1/3 | predicted only |") for line in lines)


def test_cells():
    assert relative_error(110.0, 100.0) == pytest.approx(0.1)
    assert relative_error(90.0, 0.0) is None and relative_error(None, 1.0) is None and relative_error(1.0, None) is None
    assert (percent(0.1), percent(-0.05), percent(0.0), percent(None)) == ("+10.0%", "-5.0%", "+0.0%", "-")
    assert (number(2.5), number(104.0, 1), number(0.0), number(None)) == ("2.50", "104.0", "0.00", "-")
