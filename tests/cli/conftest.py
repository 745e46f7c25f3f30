"""Fixtures shared by the CLI tests (the demo cache, ``demo_export`` and ``cache``, is tests/conftest.py's)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_recipe
from test_bench_cli import TAG_VAR, assert_nothing_left


@pytest.fixture
def bench_job(cache, monkeypatch, caplog, capsys):
    """Factory: ``recipes/serve.py OVERRIDES`` in this process on the demo cache (``helpers.run_recipe``: what
    is tested is the job's, which needs no process of its own; the command line's is
    ``test_single_bench_run_writes_metrics_with_a_baseline_of_its_own``'s), ``env`` added to the environment
    the job and its servers see; returns the exit code, what it printed and what it logged (``log``: the
    job's ``[bench]`` lines, which the command line shows on the console). No process it started may be left
    (the fake server and its children carry a tag to find them by)."""
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(cache))
    caplog.set_level(logging.INFO, logger="automodel_spec")

    def run(*overrides: str, output_dir: Path, env: dict | None = None) -> SimpleNamespace:
        tag = uuid.uuid4().hex
        with monkeypatch.context() as m:
            for name, value in {TAG_VAR: tag, **(env or {})}.items():
                m.setenv(name, value)
            caplog.clear()
            try:
                code = run_recipe("serve", *overrides, output_dir=output_dir)
            finally:
                assert_nothing_left(tag)
        printed = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err, log=caplog.text,
                               output=printed.out + printed.err + caplog.text)

    return run
