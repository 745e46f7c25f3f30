"""The launcher: the argv from the sections it takes and the prepared run, and the SGLang version check."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.errors import CheckpointError, ConfigError, MissingDependencyError
from automodel_spec.launch import check_release_serves, check_sglang_installed, launch_command, sglang_release
from automodel_spec.prepare import PreparedRun
from automodel_spec.serve.command import DraftArgs


def test_launch_command_takes_the_target_and_its_revision_from_the_prepared_run():
    run = PreparedRun(target="org/target", target_revision="r2", draft=DraftArgs(path="/exports/d"),
                      spec=SpecConfig(3, 1, 4))
    argv = launch_command(SGLangConfig(python="/venv/bin/python"), AlgorithmConfig(), run, port=4321)
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
        assert check_sglang_installed(SGLangConfig(), needed).installed == installed
    else:
        with pytest.raises(CheckpointError, match=f"needs SGLang >= {needed}.*{installed} is installed"):
            check_sglang_installed(SGLangConfig(), needed)


def _installed(monkeypatch, version):
    """This environment's SGLang as package metadata says (``None``: not installed)."""
    def read(name):
        if version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return version
    monkeypatch.setattr(importlib.metadata, "version", read)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if version else None)


@pytest.mark.parametrize(("installed", "key", "built_for", "source", "warns"), [
    ("0.5.23", None, "0.5.23", "installed", False),
    ("0.5.17.post1", None, "0.5.17", "installed", False),
    ("0.5.30", None, "0.5.23", "installed", True),       # newer than every known one: the newest, said so
    (None, None, "0.5.23", "newest known", True),        # none installed: the newest, said so
    (None, "0.5.12", "0.5.12", "sglang.release", False),  # another machine's command
    ("0.5.17", "0.5.23", "0.5.23", "sglang.release", False),
])
def test_the_release_built_for(monkeypatch, installed, key, built_for, source, warns):
    _installed(monkeypatch, installed)
    release = sglang_release(SGLangConfig(release=key))
    assert (release.release, release.source, release.installed) == (built_for, source, installed)
    assert (release.note is not None) == warns
    if warns:
        assert built_for in release.note and "newest" in release.note
    assert f"SGLang release: {built_for}" in release.describe()


def test_the_installed_release_builds_the_command(monkeypatch):
    _installed(monkeypatch, "0.5.23")
    run = PreparedRun(target="/m", target_revision=None, draft=DraftArgs(path="/exports/d"))
    argv = launch_command(SGLangConfig(cuda_graph_max_bs=64), AlgorithmConfig(), run)
    assert "--cuda-graph-max-bs-decode" in argv and "--cuda-graph-max-bs" not in argv
    _installed(monkeypatch, "0.5.12")
    argv = launch_command(SGLangConfig(cuda_graph_max_bs=64), AlgorithmConfig(), run)
    assert "--cuda-graph-max-bs" in argv and "--cuda-graph-max-bs-decode" not in argv


def test_serving_refuses_a_release_key_that_is_not_the_installed_release(monkeypatch):
    _installed(monkeypatch, "0.5.17")
    with pytest.raises(ConfigError, match=r"sglang.release=0.5.23, but SGLang 0.5.17 is installed"):
        check_sglang_installed(SGLangConfig(release="0.5.23"), "0.5.9")
    assert check_sglang_installed(SGLangConfig(release="0.5.17"), "0.5.9").release == "0.5.17"


def test_no_sglang_installed_is_a_missing_dependency_when_launching(monkeypatch):
    _installed(monkeypatch, None)
    with pytest.raises(MissingDependencyError):
        check_sglang_installed(SGLangConfig(), "0.5.9")


def test_another_interpreters_release_is_read_there(tmp_path):
    fake = tmp_path / "python"  # answers the version probe as a python with SGLang 0.5.21 would
    fake.write_text("#!/bin/sh\necho 0.5.21\n")
    fake.chmod(0o755)
    assert sglang_release(SGLangConfig(python=str(fake))).release == "0.5.21"
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nexit 1\n")
    silent.chmod(0o755)
    release = sglang_release(SGLangConfig(python=str(silent)))
    assert release.installed is None and f"sglang.python={silent}" in release.note


def test_a_release_older_than_the_draft_needs_is_refused_naming_both(monkeypatch):
    _installed(monkeypatch, None)
    release = sglang_release(SGLangConfig(release="0.5.10"))
    with pytest.raises(ConfigError, match=r"this draft needs SGLang >= 0.5.12, but the command is built for SGLang "
                                          r"0.5.10 \(sglang.release\)"):
        check_release_serves(release, "0.5.12")
    check_release_serves(sglang_release(SGLangConfig(release="0.5.12")), "0.5.12")
