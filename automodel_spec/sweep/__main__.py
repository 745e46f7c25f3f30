"""``python -m automodel_spec.sweep SWEEP_DIR``: summarize a sweep directory by hand.

For a sweep that ran over several GPU leases, or one whose summary should be drawn again.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from automodel_spec.console_log import log_to_console
from automodel_spec.sweep.summary import write_summary

log = logging.getLogger("automodel_spec.sweep")  # __name__ is "__main__" under python -m


def main(argv: list[str] | None = None) -> int:
    """Write the summary of ``SWEEP_DIR`` and show it; 2 on a usage error, 1 when it holds no point."""
    log_to_console()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        log.error("usage: python -m automodel_spec.sweep SWEEP_DIR")
        return 2
    summary = write_summary(Path(args[0]))
    log.info("%s", (Path(args[0]) / "summary.md").read_text())
    return 0 if summary["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
