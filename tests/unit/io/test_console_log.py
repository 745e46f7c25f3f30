"""The library's console messages (``ConsoleHandler``, ``log_to_console``).

As the module documents: each record is its bare message, INFO and below on stdout, warnings and
errors on stderr; the stream is looked up at each record (a replaced ``sys.stdout`` gets it);
``log_to_console`` installs the handler once and leaves a logger someone configured (Hydra's job
logging) alone. The ``automodel_spec`` logger is restored after every test, so no handler leaks into
the rest of the suite.
"""

from __future__ import annotations

import io
import logging

import pytest

from automodel_spec.io.console_log import ROOT_LOGGER, ConsoleHandler, log_to_console


@pytest.fixture
def library_logger():
    """The library's logger bare (no handler, level unset), restored as it was afterwards."""
    logger = logging.getLogger(ROOT_LOGGER)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    # propagating, as the library leaves it: pytest (catching_logs) attaches its capture handlers to every logger
    # that does not propagate, which log_to_console would take for a configured logger
    logger.propagate = True
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_info_goes_to_stdout_and_warnings_and_errors_to_stderr(library_logger, capsys):
    log_to_console()
    log = logging.getLogger(f"{ROOT_LOGGER}.sweep")  # a module's logger, under the library's
    log.info("point %d of %d", 1, 4)
    log.warning("slow server")
    log.error("export failed")
    out, err = capsys.readouterr()
    assert out == "point 1 of 4\n"  # the bare message: no level, no logger name, no time
    assert err == "slow server\nexport failed\n"


def test_the_level_given_hides_what_is_below_it(library_logger, capsys):
    log_to_console()
    assert library_logger.level == logging.INFO
    library_logger.debug("cache hit")
    assert capsys.readouterr() == ("", "")
    library_logger.handlers.clear()
    log_to_console(logging.DEBUG)
    library_logger.debug("cache hit")
    assert capsys.readouterr() == ("cache hit\n", "")  # debug is not a warning: stdout


def test_a_second_call_adds_no_second_handler(library_logger, capsys):
    log_to_console()
    log_to_console()
    assert len(library_logger.handlers) == 1
    library_logger.info("once")
    assert capsys.readouterr().out == "once\n"


def test_a_logger_already_configured_is_left_alone(library_logger, capsys):
    # Hydra's job logging gives the logger its handlers first: the console handler must not double them
    theirs = logging.StreamHandler(io.StringIO())
    library_logger.addHandler(theirs)
    library_logger.setLevel(logging.WARNING)
    log_to_console(logging.DEBUG)
    assert library_logger.handlers == [theirs] and library_logger.level == logging.WARNING
    library_logger.warning("w")
    assert capsys.readouterr() == ("", "") and theirs.stream.getvalue() == "w\n"


def test_the_stream_is_looked_up_at_each_record(library_logger, monkeypatch):
    handler = ConsoleHandler()
    library_logger.addHandler(handler)
    library_logger.setLevel(logging.INFO)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)  # replaced after the handler was made
    monkeypatch.setattr("sys.stderr", err)
    library_logger.info("to the new stdout")
    library_logger.critical("to the new stderr")
    assert (out.getvalue(), err.getvalue()) == ("to the new stdout\n", "to the new stderr\n")


def test_a_formatter_set_on_the_handler_applies(library_logger, capsys):
    handler = ConsoleHandler()
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    library_logger.addHandler(handler)
    library_logger.setLevel(logging.INFO)
    library_logger.warning("x")
    assert capsys.readouterr().err == "[WARNING] x\n"


def test_a_broken_stream_is_reported_by_logging_not_raised(library_logger, monkeypatch):
    class Broken(io.StringIO):
        def write(self, s):
            raise OSError("stdout closed")

    err = io.StringIO()
    monkeypatch.setattr("sys.stdout", Broken())
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(logging, "raiseExceptions", True)
    library_logger.addHandler(ConsoleHandler())
    library_logger.setLevel(logging.INFO)
    library_logger.info("lost")  # must not raise into the caller: logging's handleError reports it
    assert "Logging error" in err.getvalue() and "stdout closed" in err.getvalue()
