"""The library's messages on the console when no one configured logging: plain lines, as always shown.

The library reports through ``logging`` (loggers under ``automodel_spec``). The recipes get their
handlers from Hydra's job logging (``conf/hydra/job_logging/automodel_spec.yaml``: the console shows
each message as is, the job's log file keeps it with a time stamp). The library's own command-line
entry points (``python -m automodel_spec.sweep``, ``parent_watch``) and scripts call ``log_to_console``.
"""

from __future__ import annotations

import logging
import sys

ROOT_LOGGER = "automodel_spec"


class ConsoleHandler(logging.Handler):
    """Each record as its bare message: INFO and below on stdout, warnings and errors on stderr.

    The stream is looked up at each record, so a replaced ``sys.stdout`` (a test's capture) gets it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def log_to_console(level: int = logging.INFO) -> None:
    """Show the library's messages on the console, unless its logger already has a handler."""
    logger = logging.getLogger(ROOT_LOGGER)
    if logger.handlers:
        return
    logger.addHandler(ConsoleHandler())
    logger.setLevel(level)
