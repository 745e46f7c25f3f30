"""GPU-suite reporting: print each failure as it happens (a device call may be cut off before
pytest's final report); and the record of this suite's own SGLang processes."""

from __future__ import annotations

import threading

import pytest

from .serve_cli import track_own_sglang


def pytest_runtest_logreport(report):
    if report.failed:
        print(f"\n!!! FAILED {report.nodeid} ({report.when}):\n{report.longreprtext[-4000:]}\n", flush=True)


@pytest.fixture(scope="session", autouse=True)
def own_sglang_processes():
    """Notes every SGLang process below this pytest process while the suite runs, so that a suite
    pinned to some GPUs counts its own leftovers and not those of a suite beside it."""
    stop = threading.Event()

    def watch():
        while not stop.wait(0.25):
            track_own_sglang()

    watcher = threading.Thread(target=watch, name="own-sglang", daemon=True)
    watcher.start()
    yield
    stop.set()
    watcher.join()
