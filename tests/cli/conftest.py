"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bench_cli import EXPORT, output, run_cli


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """A cache holding the built demo pair and its export (one real ``recipes/export.py`` run per session,
    i.e. per pytest-xdist worker). Tests only read it or add exports of their own (none compares its
    contents with another module's), so the modules share it."""
    root = tmp_path_factory.mktemp("cli-cache")
    res = run_cli(EXPORT, cwd=root / "cwd", cache=root / "cache", timeout=120)
    assert res.returncode == 0, output(res)
    return root / "cache"
