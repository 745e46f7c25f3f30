"""The launcher: the argv from the sections it takes and the prepared run, and the SGLang version check."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from automodel_spec.command import DraftArgs
from automodel_spec.config import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.errors import CheckpointError
from automodel_spec.launch import check_sglang_installed, launch_command
from automodel_spec.prepare import PreparedRun


def test_launch_command_takes_the_target_and_its_revision_from_the_prepared_run():
    run = PreparedRun(target="org/target", target_revision="r2", draft=DraftArgs(path="/exports/d"))
    argv = launch_command(SGLangConfig(python="/venv/bin/python"), AlgorithmConfig(), SpecConfig(3, 1, 4), run, port=4321)
    assert argv[:6] == ["/venv/bin/python", "-m", "sglang.launch_server", "--model-path", "org/target", "--revision"]
    assert argv[6] == "r2" and argv[argv.index("--port") + 1] == "4321"
    assert argv[argv.index("--speculative-draft-model-path") + 1] == "/exports/d"


@pytest.mark.parametrize(("installed", "needed", "ok"), [
    ("0.5.9rc1", "0.5.12", False),  # not 0.5.91: a release candidate of 0.5.9
    ("0.5.12", "0.5.9", True),
    ("0.5.17.post1", "0.5.17", True),
    ("0.5.11", "0.5.12", False),
])
def test_sglang_version_check_compares_releases(monkeypatch, installed, needed, ok):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed)
    if ok:
        check_sglang_installed(None, needed)
    else:
        with pytest.raises(CheckpointError, match=f"needs SGLang >= {needed}.*{installed} is installed"):
            check_sglang_installed(None, needed)
