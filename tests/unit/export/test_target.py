"""The target's content key: what a benchmark keys its results on besides the target's path."""

from __future__ import annotations

import shutil

import pytest

from automodel_spec.errors import CheckpointError
from automodel_spec.export import target as target_module
from automodel_spec.export.target import target_content_key


def _target(root, weights: bytes = b"weights-1"):
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 8}')
    (root / "model.safetensors").write_bytes(weights)
    return root


def test_the_key_names_the_content_not_the_path(tmp_path):
    memo = tmp_path / "digests"
    a = _target(tmp_path / "a")
    key = target_content_key(str(a), memo)
    assert key and target_content_key(str(a), memo) == key
    b = tmp_path / "b"
    shutil.copytree(a, b)  # a copy elsewhere (another machine, a restored sweep): the same weights
    assert target_content_key(str(b), memo) == key
    (a / "model.safetensors").write_bytes(b"weights-2")  # retrained in place: same path, same names
    assert target_content_key(str(a), memo) != key
    (b / "tokenizer.json").write_text("{}")  # any file SGLang may read counts
    assert target_content_key(str(b), memo) != key


def test_hidden_files_and_folders_do_not_count(tmp_path):
    memo = tmp_path / "digests"
    a = _target(tmp_path / "a")
    key = target_content_key(str(a), memo)
    (a / ".cache").mkdir()
    (a / ".cache" / "x").write_text("x")
    (a / "runs").mkdir()  # SGLang reads the directory's top only
    (a / "runs" / "log.txt").write_text("x")
    assert target_content_key(str(a), memo) == key


def test_a_hub_id_has_no_content_key(tmp_path):
    assert target_content_key("meta-llama/Llama-3.1-8B-Instruct", tmp_path) is None
    assert target_content_key(None, tmp_path) is None


def test_an_unwritable_memo_dir_still_gives_the_key(tmp_path):
    a = _target(tmp_path / "a")
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    assert target_content_key(str(a), blocker / "digests") == target_content_key(str(a), tmp_path / "digests")


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    a = _target(tmp_path / "a")

    def refuse(path, memo_dir=None, **_):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(target_module, "file_digest", refuse)
    with pytest.raises(CheckpointError, match=r"target.path=.*cannot read .*config.json \(Permission denied\)"):
        target_content_key(str(a), tmp_path / "digests")
