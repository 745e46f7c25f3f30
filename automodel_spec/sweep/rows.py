"""A sweep's points as rows: one per point and level, read from each point's ``metrics.json``.

The columns are derived from the result dataclasses (``PointResult``, ``SpecSettings``,
``LevelResult``), so a field added there is a column here: nothing is dropped on the way to the CSV.
Lists and mappings (the acceptance histogram, the per-category table) are JSON text in their cell.
``read_rows`` reads a CSV of this schema; an unknown column is refused by name.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields
from pathlib import Path

from automodel_spec.bench.metrics import add_speedups
from automodel_spec.bench.result import (
    METRICS,
    LevelResult,
    PointResult,
    ResultSchemaError,
    SpecSettings,
    read_point,
)
from automodel_spec.config.schema import SGLangConfig
from automodel_spec.config.sglang_options import INFO_SERVER_SETTINGS

# a point measured on another target, draft, prompts file's content, model of card or SGLang release than the
# sweep's newest point: listed, never ranked
OTHER_SETUP = "other_setup"
_SPEC = [f.name for f in fields(SpecSettings)]
_LEVEL = [f.name for f in fields(LevelResult)]
_POINT_TAIL = ["algorithm", "boot_s", "gpu_seconds", "gpu", "sglang_installed", "other_gpu_processes", "reason"]
# a predict sweep's columns (sweep/predictions.py), empty in other sweeps
PREDICTED = ["role", "predicted_accept_length", "predicted_tok_per_s", "prediction_method"]
# INFO_SERVER_SETTINGS: the server settings a sweep may vary beside the speculative one (several sweeps
# into one directory, or sglang.* overrides in the grid), as the server reported them
COLUMNS = (["point", "status"] + [f"requested_{n}" for n in _SPEC] + [f"effective_{n}" for n in _SPEC]
           + _LEVEL + _POINT_TAIL + list(INFO_SERVER_SETTINGS) + PREDICTED)


def point_files(sweep_dir: Path) -> list[Path]:
    """Each point's ``metrics.json`` in ``sweep_dir``: one directory a point, right below it (Hydra's
    ``sweep.subdir``, conf/hydra/bench_sweep.yaml), not deeper (what lies deeper is not this sweep's); the
    shared baseline is not a point."""
    return sorted(p for p in Path(sweep_dir).glob(f"*/{METRICS}") if p.parent.name != "baseline")


def collect_rows(sweep_dir: Path) -> list[dict]:
    """One row per point and level; one per invalid, failed or unreadable point (the baseline is not a point).

    A ``metrics.json`` this version cannot read is a row of status ``unreadable`` whose reason names
    the file and why, rather than a point silently missing from the summary.
    """
    sweep_dir = Path(sweep_dir)
    rows, results = [], {}
    for path in point_files(sweep_dir):
        name = path.parent.name  # a point is the directory right below the sweep's (point_files)
        try:
            results[name] = read_point(path)
        except ResultSchemaError as exc:
            rows.append({**dict.fromkeys(COLUMNS), "point": name, "status": "unreadable", "reason": str(exc)})
    newest = max((n for n, r in results.items() if r.started), key=lambda n: results[n].started, default=None)
    for name, result in results.items():
        join_baseline(sweep_dir, result)
        point = point_rows(name, result)
        other = other_setup(result, results[newest]) if newest is not None and result.started else None
        if other:
            why = (f"measured on another pair, prompts, card or SGLang than the sweep's newest point ({newest}): "
                   f"{other}; not ranked. Run the sweep's command again to measure it as the newest point was, or give "
                   "another bench.name to keep both")
            point = [{**r, "status": OTHER_SETUP, "reason": why} for r in point]
        rows.extend(point)
    return rows


def other_setup(result: PointResult, newest: PointResult) -> str | None:
    """How ``result``'s target, draft, prompts, card or SGLang differs from ``newest``'s; ``None``: the same.

    Content keys are compared where both points recorded them (a target moved elsewhere is the same
    target), else the paths. A point without a draft (no speculation) has only its target compared. Cards
    (by model, ``PointResult.cards``), SGLang releases and the prompts' content are compared where both points
    recorded them.
    """
    def differs(what: str, path: str | None, content: str | None, new_path: str | None, new_content: str | None):
        if content and new_content:
            return None if content == new_content else f"{what} {path} holding {content[:10]}, not {new_content[:10]}"
        return None if path == new_path else f"{what} {path}, not {new_path}"

    found = [differs("target", result.target, result.target_content, newest.target, newest.target_content)]
    if result.draft and newest.draft:
        found.append(differs("draft", result.draft, result.draft_content, newest.draft, newest.draft_content))
    if result.cards and newest.cards and result.cards != newest.cards:
        found.append(f"card {' + '.join(result.cards)}, not {' + '.join(newest.cards)}")
    if result.prompts_content and newest.prompts_content and result.prompts_content != newest.prompts_content:
        found.append(f"prompts {result.bench.get('prompts') or '(built-in)'} holding {result.prompts_content[:10]}, "
                     f"not {newest.prompts_content[:10]}")
    if result.sglang_installed and newest.sglang_installed and result.sglang_installed != newest.sglang_installed:
        found.append(f"SGLang {result.sglang_installed}, not {newest.sglang_installed}")
    return "; ".join(f for f in found if f) or None


def join_baseline(sweep_dir: Path, result: PointResult) -> None:
    """Fill in the speedups of a point that finished before the shared baseline did (a parallel
    sweep's points do not wait for it), from the baseline's ``metrics.json`` if it is there now.

    The baseline is looked up where the job recorded it, else by its key under this sweep's
    ``baseline/`` (a sweep directory copied elsewhere).
    """
    if result.status != "ok" or not result.baseline_dir:
        return
    if all(lv.baseline_tok_per_s is not None for lv in result.levels.values()):
        return
    recorded = Path(result.baseline_dir)
    for path in (recorded / METRICS, Path(sweep_dir) / "baseline" / recorded.name / METRICS):
        try:
            baseline = read_point(path)
        except (ResultSchemaError, OSError):
            continue
        if baseline.status == "ok":
            add_speedups(result.levels, baseline.levels)
            return


def setting_of(row: dict) -> tuple[int | None, int | None, int | None]:
    """(steps, topk, draft tokens) the server ran: the effective values where it reported them."""
    if row.get("effective_num_steps") is not None:
        return row["effective_num_steps"], row["effective_topk"], row["effective_num_draft_tokens"]
    return row.get("requested_num_steps"), row.get("requested_topk"), row.get("requested_num_draft_tokens")


def is_auto(row: dict) -> bool:
    """A point whose setting SGLang chose (none was requested, adaptive mode aside)."""
    return row.get("requested_num_steps") is None and not row.get("requested_adaptive")


def level_of(row: dict) -> tuple:
    """A row's level: ``(temperature, concurrency)`` for a closed loop, ``(temperature, concurrency, request
    rate)`` for an open loop (its concurrency is its cap on requests in flight, 0 for none). A phase of a
    phased load is not a level (``is_phase``): its tuple also holds the phase, so no level's table takes it."""
    if is_phase(row):
        return (row["temperature"], row["concurrency"], row.get("request_rate") or 0.0, row["phase"])
    if row.get("request_rate") is None:
        return (row["temperature"], row["concurrency"])
    return (row["temperature"], row["concurrency"], row["request_rate"])


def level_order(level: tuple) -> tuple:
    """How levels are listed: by temperature, the concurrencies first, then the request rates (by rate)."""
    return (level[0], 1, level[2], level[1]) if len(level) > 2 else (level[0], 0, level[1], 0)


def level_name(level: tuple) -> str:
    """``temperature T, concurrency C`` or ``temperature T, R requests/s`` (``, at most C in flight``): how
    tables, titles and best lines name a level."""
    rate = level[2] if len(level) > 2 else 0.0
    if not rate:
        return f"temperature {level[0]:g}, concurrency {level[1]}"
    return f"temperature {level[0]:g}, {rate:g} requests/s" + (f", at most {level[1]} in flight" if level[1] else "")


def is_phase(row: dict) -> bool:
    """A row of a phased load (a phase, or the whole run: ``phase`` 0), reported apart from the levels."""
    return row.get("phase") is not None


def is_closed_loop(row: dict) -> bool:
    """A level of ``concurrency`` requests in flight (no request rate, no phase): what presets key on."""
    return row.get("request_rate") is None and not is_phase(row)


def varied_settings(rows: list[dict]) -> list[str]:
    """The ``INFO_SERVER_SETTINGS`` columns whose values differ between the measured points of a sweep."""
    ok = [r for r in rows if r.get("status") == "ok"]
    return [c for c in INFO_SERVER_SETTINGS if len({r.get(c) for r in ok}) > 1]


def server_overrides(row: dict, varied: list[str]) -> str:
    """The ``varied`` server settings of a row as overrides (``sglang.attention_backend=triton``)."""
    return " ".join(f"{INFO_SERVER_SETTINGS[c]}={row[c]}" for c in varied if row.get(c) is not None)


def override_line(row: dict, varied: list[str] = ()) -> str:
    """The setting as overrides for recipes/serve.py (the values the server actually used), with the
    server settings the sweep varied (``varied_settings``)."""
    steps, topk, tokens = setting_of(row)
    adaptive = row.get("requested_adaptive")
    server = server_overrides(row, list(varied))
    if steps is None and not adaptive:
        return "(no speculative setting: SGLang chose it)" + (f" {server}" if server else "")
    line = f"spec.num_steps={steps} spec.topk={topk} spec.num_draft_tokens={tokens}" if steps is not None else ""
    if adaptive:
        line = (line + " spec.adaptive=true").strip()
        if row.get("requested_adaptive_config"):
            line += f" spec.adaptive_config={row['requested_adaptive_config']}"
    return f"{line} {server}".strip()


def point_rows(name: str, result: PointResult) -> list[dict]:
    """Rows of one point: one per level, or one without a level when it was not measured."""
    base = {"point": name, "status": result.status}
    base.update({f"requested_{k}": v for k, v in asdict(result.requested).items()})
    eff = asdict(result.effective) if result.effective is not None else dict.fromkeys(_SPEC)
    base.update({f"effective_{k}": v for k, v in eff.items()})
    base.update(dict.fromkeys(PREDICTED))
    base.update(algorithm=result.algorithm, boot_s=result.boot_s, gpu_seconds=result.gpu_seconds,
                gpu="; ".join(result.gpu or []) or None, sglang_installed=result.sglang_installed,
                other_gpu_processes="; ".join(result.other_gpu_processes or []) or None,
                reason=result.reason or result.error,
                **{c: _scalar((result.server_settings or {}).get(c)) for c in INFO_SERVER_SETTINGS})
    if result.status != "ok" or not result.levels:
        return [{**dict.fromkeys(_LEVEL), **base}]
    return [{**base, **asdict(lv)} for lv in result.levels.values()]


def _scalar(value):
    """A server setting as a cell: a list or mapping (a damaged or hand-edited file) is no setting."""
    return value if isinstance(value, (str, int, float, bool)) or value is None else None


def write_rows(path: Path, rows: list[dict]) -> None:
    """``summary.csv``: every column, lists and mappings as JSON; a key that is not a column is an error."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="raise")
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})


def read_rows(path: Path) -> list[dict]:
    """Rows of a ``summary.csv``, typed as the dataclasses type them.

    Raises:
        ResultSchemaError: a column this schema does not know (named), or a cell of the wrong type.
    """
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        unknown = [h for h in header if h not in COLUMNS]
        if unknown:
            raise ResultSchemaError(f"{path}: unknown column(s) {', '.join(unknown)}: not a summary.csv this "
                                    "version of automodel-spec wrote or reads.")
        rows = []
        for i, raw in enumerate(reader, 2):
            row = dict.fromkeys(COLUMNS)
            for h in header:
                try:
                    row[h] = _parse(h, raw[h])
                except ValueError as exc:
                    raise ResultSchemaError(f"{path}:{i}: column {h}: {exc}") from exc
            rows.append(row)
    return rows


def _kinds() -> dict[str, str]:
    kinds = {"point": "str", "status": "str", "algorithm": "str", "gpu": "str", "sglang_installed": "str",
             "other_gpu_processes": "str", "reason": "str", "boot_s": "float", "gpu_seconds": "float", "role": "str",
             "predicted_accept_length": "float", "predicted_tok_per_s": "float", "prediction_method": "str"}
    sglang = {f.name: f.type for f in fields(SGLangConfig)}
    for column, setting in INFO_SERVER_SETTINGS.items():  # typed as the setting is
        kinds[column] = _kind(str(sglang[setting.split(".", 1)[1]]))
    for prefix in ("requested_", "effective_"):
        for f in fields(SpecSettings):
            kinds[prefix + f.name] = _kind(str(f.type))
    for f in fields(LevelResult):
        kinds[f.name] = _kind(str(f.type))
    return kinds


def _kind(annotation: str) -> str:
    if annotation.startswith(("list", "dict")):
        return "json"
    for k in ("bool", "int", "float"):
        if annotation.startswith(k):
            return k
    return "str"


_KINDS = _kinds()


def _parse(column: str, text: str | None):
    if text is None or text == "":
        return None
    kind = _KINDS[column]
    if kind == "json":
        return json.loads(text)
    if kind == "bool":
        if text not in ("True", "False", "true", "false"):
            raise ValueError(f"{text!r} is not a boolean")
        return text in ("True", "true")
    if kind == "int":
        return int(float(text))
    if kind == "float":
        return float(text)
    return text
