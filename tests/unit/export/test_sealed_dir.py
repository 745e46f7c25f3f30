"""The sealed directory: written whole or not at all, trusted only while it is as written, and
what killed writers left is removed (the export's own cases are in test_export.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from automodel_spec.export.sealed_dir import (
    TMP_MARK,
    WRITER,
    discard_dir,
    load_manifest,
    remove_dead_temp_dirs,
    sealed_damage,
    write_sealed_dir,
)


def _fill(d: Path) -> None:
    (d / "a.txt").write_text("a")
    (d / "sub").mkdir()
    (d / "sub" / "b.bin").write_bytes(b"bb")
    (d / "LATEST").symlink_to("sub")


def _temps(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if TMP_MARK in p.name]


def test_a_sealed_directory_records_every_file_and_is_readable_by_all(tmp_path):
    final = tmp_path / "store" / "thing"
    assert write_sealed_dir(final, _fill, manifest_name="seal.json", manifest={"key": "k"}) is True
    manifest, why = load_manifest(final, "seal.json")
    assert why == "" and manifest["key"] == "k"
    assert sorted(manifest["files"]) == ["a.txt", "sub/b.bin"]  # the symlink is left as it is, unrecorded
    assert manifest["files"]["sub/b.bin"]["size"] == 2
    assert not (final / WRITER).exists() and _temps(final.parent) == []
    assert stat.S_IMODE(final.stat().st_mode) == 0o755
    assert stat.S_IMODE((final / "sub" / "b.bin").stat().st_mode) == 0o644
    assert sealed_damage(final, manifest, None) is None


def test_a_changed_or_deleted_file_is_named(tmp_path):
    final = tmp_path / "thing"
    write_sealed_dir(final, _fill, manifest_name="seal.json")
    manifest, _ = load_manifest(final, "seal.json")
    (final / "sub" / "b.bin").write_bytes(b"xx")  # same size, other content: the digest tells
    assert sealed_damage(final, manifest, None) == "sub/b.bin changed since it was written (its content differs)"
    (final / "a.txt").unlink()
    assert sealed_damage(final, manifest, None).startswith("a.txt was deleted")


def test_a_manifest_that_is_not_json_says_so(tmp_path):
    (tmp_path / "seal.json").write_text("{not json")
    assert load_manifest(tmp_path, "seal.json") == (None, "is damaged (not valid JSON)")
    assert load_manifest(tmp_path / "none", "seal.json") == (None, "is missing")


def test_a_failing_fill_leaves_nothing(tmp_path):
    def boom(d: Path) -> None:
        (d / "half").write_text("half")
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="simulated"):
        write_sealed_dir(tmp_path / "thing", boom)
    assert list(tmp_path.iterdir()) == []


def _finished_by_another_writer(final: Path):
    def fill(d: Path) -> None:
        _fill(d)
        final.mkdir()
        (final / "theirs").write_text("theirs")

    return fill


def test_with_keep_finished_the_writer_that_finished_first_wins(tmp_path):
    final = tmp_path / "thing"
    assert write_sealed_dir(final, _finished_by_another_writer(final), keep_finished=True) is False
    assert [p.name for p in final.iterdir()] == ["theirs"] and _temps(tmp_path) == []


def test_without_keep_finished_a_directory_in_the_way_is_an_error(tmp_path):
    final = tmp_path / "thing"
    with pytest.raises(OSError):
        write_sealed_dir(final, _finished_by_another_writer(final))
    assert [p.name for p in final.iterdir()] == ["theirs"] and _temps(tmp_path) == []


def test_discard_removes_only_a_directory_of_owned_names(tmp_path):
    d = tmp_path / "thing"
    d.mkdir()
    (d / "a").write_text("a")
    (d / "notes.md").write_text("mine")
    assert discard_dir(d, frozenset({"a"})) is False and (d / "notes.md").exists()
    (d / "notes.md").unlink()
    assert discard_dir(d, frozenset({"a"})) is True and list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks use /proc")
def test_only_dead_writers_leftovers_are_removed(tmp_path):
    dead = tmp_path / f".thing{TMP_MARK}{_dead_pid()}-abcd1234"
    live = tmp_path / f".other{TMP_MARK}{os.getpid()}-abcd1234"
    foreign = tmp_path / f".mine{TMP_MARK}notours"  # not a name this module gives
    for d in (dead, live, foreign):
        d.mkdir()
        (d / WRITER).write_text(json.dumps({"pid": int(d.name.split("-")[1]) if d is not foreign else 1}))
    assert remove_dead_temp_dirs(tmp_path) == [dead.name]
    assert live.exists() and foreign.exists()
