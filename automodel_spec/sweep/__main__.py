"""``python -m automodel_spec.sweep SWEEP_DIR``: summarize a sweep directory by hand.

For a sweep that ran over several GPU leases, or one whose summary should be drawn again.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from automodel_spec.bench.result import ResultSchemaError, read_point
from automodel_spec.io.console_log import log_to_console
from automodel_spec.io.path_lookup import missing_reason
from automodel_spec.sweep.rows import point_files
from automodel_spec.sweep.summary import other_setup_warning, write_summary

log = logging.getLogger("automodel_spec.sweep")  # __name__ is "__main__" under python -m


USAGE = "usage: python -m automodel_spec.sweep SWEEP_DIR  (a sweep's directory, sweeps/NAME)"
_GIVE_A_SWEEP = ("Give the directory a sweep wrote (sweeps/NAME, from python recipes/serve.py -m +sweep=grid "
                 "bench.name=NAME ...).")
# what Hydra's sweeper writes into every sweep directory (print_only excepted, which writes no sweep)
MULTIRUN_YAML = "multirun.yaml"


def _none_is_ours(points: list[Path]) -> list[tuple[str, str]]:
    """``(point, why unreadable)`` of each of ``points`` when none is a benchmark result this tool wrote;
    ``[]`` as soon as one is (a sweep copied without its multirun.yaml is still a sweep)."""
    why = []
    for path in points:
        try:
            read_point(path)
        except ResultSchemaError as exc:
            why.append((path.parent.name, str(exc)))
        else:
            return []
    return why


def main(argv: list[str] | None = None) -> int:
    """Write the summary of ``SWEEP_DIR`` and show it; 2 on a usage error (no such directory included), 1
    when the directory holds no point, or no readable one (each unreadable point is named with its reason),
    or the summary cannot be written.

    A directory that is missing, a file, holds no point (no ``*/metrics.json``), or is no sweep (no Hydra
    ``multirun.yaml`` and no point this tool wrote: another tool's ``metrics.json`` files) is refused with a
    message saying which, and nothing is written into it: its own ``summary.md`` is never overwritten.
    """
    log_to_console()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        log.error("%s", USAGE)
        return 2
    sweep_dir = Path(args[0]).expanduser()
    problem = None if sweep_dir.is_dir() else ("is a file, not a directory" if sweep_dir.exists()
                                               else missing_reason(sweep_dir))
    if problem:
        log.error("error: %s %s.\n%s", sweep_dir, problem, USAGE)
        return 2
    points = point_files(sweep_dir)
    if not points:
        log.error("error: %s holds no sweep point (no */metrics.json): nothing to summarize, so nothing was "
                  "written. %s", sweep_dir, _GIVE_A_SWEEP)
        return 1
    if not (sweep_dir / MULTIRUN_YAML).is_file() and (why := _none_is_ours(points)):
        for name, reason in why:
            log.warning("WARNING: point %s is unreadable: %s", name, reason)
        log.error("error: %s is not a sweep directory: it has no %s (Hydra writes one into every sweep) and none of "
                  "its %d */metrics.json is a benchmark result of this tool, so its summary files (summary.md, "
                  "summary.csv, presets/, ...) were not written there. %s", sweep_dir, MULTIRUN_YAML, len(points),
                  _GIVE_A_SWEEP)
        return 1
    try:
        summary = write_summary(sweep_dir)
    except OSError as exc:  # a summary file's place taken by a directory, a full or read-only disk
        log.error("error: cannot write the summary of %s: %s (%s). Make room for summary.csv, summary.md and "
                  "best_override.txt there.", sweep_dir, exc.strerror or exc, exc.filename or sweep_dir)
        return 1
    log.info("%s", (sweep_dir / "summary.md").read_text())
    unreadable = [r for r in summary["rows"] if r["status"] == "unreadable"]
    for r in unreadable:
        log.warning("WARNING: point %s is unreadable: %s; resuming the sweep measures it again.", r["point"],
                    r["reason"])
    if warning := other_setup_warning(summary["rows"]):
        log.warning("%s", warning)
    return 0 if len(unreadable) < len(summary["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
