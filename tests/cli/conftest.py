"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_bench_cli import EXPORT, output, run_cli


@pytest.fixture(scope="session")
def demo_export(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A cache holding the built demo pair and its export, and the first real ``recipes/export.py`` run that
    made them (one per session, i.e. per pytest-xdist worker: ~2.3 s of CPU, torch imported)."""
    root = tmp_path_factory.mktemp("cli-cache")
    res = run_cli(EXPORT, cwd=root / "cwd", cache=root / "cache", timeout=120)
    assert res.returncode == 0, output(res)
    return root / "cache", res


@pytest.fixture(scope="session")
def cache(demo_export) -> Path:
    """The demo cache of ``demo_export``. Tests only read it or add exports of their own (none compares its
    contents with another module's; a test may compare them before and after its own run), so the modules
    share it."""
    return demo_export[0]
