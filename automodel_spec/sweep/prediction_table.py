"""A predict sweep's predictions beside what was measured: columns, the table and its error."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from statistics import median

from automodel_spec.bench.result import MAX_RESULT_BYTES, ResultSchemaError
from automodel_spec.predict.driver import PREDICTIONS
from automodel_spec.sweep.rows import is_closed_loop, level_name, setting_of

FIRST, CONFIRMED = "measured first", "confirmed"


# what the summary reads of predictions.json, by key: (type, the keys each item has, for lists of objects)
_NUMBER = (int, float)
_PREDICTION = {"point": str, "temperature": _NUMBER, "concurrency": int, "accept_length": _NUMBER + (type(None),),
               "tok_per_s": _NUMBER + (type(None),), "method": str}
_COST_MODEL = {"intercept_s": _NUMBER, "per_step_s": _NUMBER, "per_draft_token_s": _NUMBER, "per_token_s": _NUMBER,
               "rms_relative_error": _NUMBER, "observations": int, "unidentified": list}


def read_predictions(sweep_dir: Path) -> dict | None:
    """``predictions.json`` of a predict sweep, or ``None`` for another kind of sweep (no such file).

    Raises:
        ResultSchemaError: the file cannot be read, is not JSON, or lacks what the summary reads of it.
    """
    path = Path(sweep_dir) / PREDICTIONS
    if not os.path.lexists(path):
        return None
    if not path.is_file():  # a directory, a fifo (which would block the reader), a broken link
        raise ResultSchemaError(f"{path}: is not a regular file")
    if path.stat().st_size > MAX_RESULT_BYTES:
        raise ResultSchemaError(f"{path}: is larger than {MAX_RESULT_BYTES >> 20} MiB: not a file this project wrote")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ResultSchemaError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from exc
    problem = _predictions_problem(data)
    if problem:
        raise ResultSchemaError(f"{path}: {problem} (the file was damaged or edited by hand)")
    return data


def _predictions_problem(data) -> str | None:
    if not isinstance(data, dict):
        return "is not a JSON object"
    for key, kind in (("predictions", list), ("measured_first", list), ("confirmations", list),
                      ("cost_models", dict)):
        if not isinstance(data.get(key), kind):
            return f"{key} is missing or not a JSON {'array' if kind is list else 'object'}"
    if not all(isinstance(x, str) for x in data["measured_first"]):
        return "measured_first is not a list of point names"
    if not all(isinstance(c, dict) and isinstance(c.get("point"), str) for c in data["confirmations"]):
        return "a confirmation has no point name"
    if not isinstance(data.get("skipped") or [], list):
        return "skipped is not a list"
    items = [("predictions", i, p, _PREDICTION) for i, p in enumerate(data["predictions"])]
    items += [("cost_models", k, m, _COST_MODEL) for k, m in data["cost_models"].items()]
    for where, i, item, keys in items:
        if where == "cost_models" and not str(i).isdigit():
            return f"cost_models has a key {i!r} that is not a concurrency"
        if not isinstance(item, dict):
            return f"{where}[{i!r}] is not a JSON object"
        for key, kind in keys.items():
            value = item.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or \
                    (isinstance(value, float) and not math.isfinite(value)):
                return f"{where}[{i!r}].{key}={json.dumps(value)[:40]} is missing or of the wrong type"
    return None


def attach_predictions(rows: list[dict], pred: dict | None) -> None:
    """Fill each row's ``role`` and ``predicted_*`` columns from ``predictions.json`` (in place)."""
    if pred is None:
        return
    table = {(p["point"], p["temperature"], p["concurrency"]): p for p in pred["predictions"]}
    first = set(pred["measured_first"])
    confirmed = {c["point"] for c in pred["confirmations"]}
    for r in rows:
        label = _label(r)
        if label is None or r.get("requested_adaptive"):
            continue
        r["role"] = FIRST if label in first else CONFIRMED if label in confirmed else None
        # predictions are of the closed-loop levels only
        p = table.get((label, r.get("temperature"), r.get("concurrency"))) if is_closed_loop(r) else None
        if p is not None:
            r.update(predicted_accept_length=p["accept_length"], predicted_tok_per_s=p["tok_per_s"],
                     prediction_method=p["method"])


def prediction_lines(rows: list[dict], pred: dict | None) -> list[str]:
    """summary.md's section: per level, every grid point's prediction beside its measurement, and the error."""
    if pred is None:
        return []
    measured = {(_label(r), r["temperature"], r["concurrency"]): r for r in rows
                if r["status"] == "ok" and _label(r) and not r.get("requested_adaptive") and is_closed_loop(r)}
    lines = ["## Predicted vs measured", "",
             f"Measured first: {', '.join(pred['measured_first'])}; confirmed: "
             f"{', '.join(c['point'] for c in pred['confirmations']) or 'none'}. Predictions were made from the "
             "points measured first, before the confirmations ran; a point measured first is predicted from "
             "its own acceptance (its tokens/s error is the cost model's fit).", ""]
    for c, m in sorted(pred["cost_models"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"- cost model at concurrency {c}: round = {m['intercept_s'] * 1e3:.2f} ms + "
                     f"{m['per_step_s'] * 1e3:.2f} ms/step + {m['per_draft_token_s'] * 1e3:.3f} ms/draft token; "
                     f"{m['per_token_s'] * 1e3:.3f} ms per output token; fit error (rms) "
                     f"{m['rms_relative_error']:.1%} over {m['observations']} levels"
                     + (f"; not identified: {', '.join(m['unidentified'])}" if m["unidentified"] else ""))
    for line in pred.get("skipped") or []:
        lines.append(f"- skipped: {line}")
    lines.append("")
    levels = sorted({(p["temperature"], p["concurrency"]) for p in pred["predictions"]})
    errors_al, errors_tps = [], []
    for lv in levels:
        lines += [f"### {level_name(lv)}", "",
                  "| point | role | predicted AL | measured AL | AL error | predicted tok/s | measured tok/s "
                  "| tok/s error | method |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        here = sorted((p for p in pred["predictions"] if (p["temperature"], p["concurrency"]) == lv),
                      key=lambda p: -(p["tok_per_s"] or 0))
        for p in here:
            r = measured.get((p["point"], *lv))
            role = FIRST if p["point"] in pred["measured_first"] else \
                CONFIRMED if p["point"] in {c["point"] for c in pred["confirmations"]} else "predicted only"
            e_al = relative_error(p["accept_length"], r["accept_length"] if r else None)
            e_t = relative_error(p["tok_per_s"], r["output_tok_per_s"] if r else None)
            if role == CONFIRMED:
                errors_al += [abs(e_al)] if e_al is not None else []
                errors_tps += [abs(e_t)] if e_t is not None else []
            lines.append(f"| {p['point']} | {role} | {number(p['accept_length'])} | {number(r and r['accept_length'])} | "
                         f"{percent(e_al)} | {number(p['tok_per_s'], 1)} | {number(r and r['output_tok_per_s'], 1)} | "
                         f"{percent(e_t)} | {p['method']} |")
        lines.append("")
    if errors_tps:
        lines += [f"Confirmed points (out of sample): median |error| accept length {median(errors_al):.1%}, "
                  f"tokens/s {median(errors_tps):.1%}.", ""]
    return lines


def _label(row: dict) -> str | None:
    steps, topk, tokens = setting_of(row)
    return None if steps is None else f"{steps}/{topk}/{tokens}"


def relative_error(pred: float | None, ref: float | None) -> float | None:
    """``(pred - ref) / ref``; ``None`` where either is missing (or ``ref`` is 0)."""
    return (pred - ref) / ref if pred is not None and ref else None


def percent(e: float | None) -> str:
    """A signed percentage for a table cell (``-`` for none)."""
    return "-" if e is None else f"{e:+.1%}"


def number(v: float | None, nd: int = 2) -> str:
    """A number for a table cell (``-`` for none)."""
    return "-" if v is None else f"{v:.{nd}f}"
