"""GPU-suite reporting: print each failure as it happens (a device call may be cut off before
pytest's final report)."""

from __future__ import annotations


def pytest_runtest_logreport(report):
    if report.failed:
        print(f"\n!!! FAILED {report.nodeid} ({report.when}):\n{report.longreprtext[-4000:]}\n", flush=True)
