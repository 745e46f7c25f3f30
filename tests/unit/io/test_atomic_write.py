"""Atomic writes (``write_text_atomically``, ``write_json_atomically``).

What the module promises: the target holds the old content or the new, never part of it; a failed
write leaves the old file as it was and no ``.NAME.*.tmp`` beside it; the new file's permissions are a
plain ``open(path, "w")``'s (the umask applies); JSON ends in one newline and turns what JSON lacks
into ``str``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import automodel_spec.io.atomic_write as atomic_write
from automodel_spec.io.atomic_write import write_json_atomically, write_text_atomically


def test_writes_a_new_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_text_atomically(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()  # UTF-8, whatever the locale
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_replaces_an_existing_file_by_rename(tmp_path):
    target = tmp_path / "summary.md"
    target.write_text("old content, longer than the new one\n")
    before = target.stat().st_ino
    write_text_atomically(target, "new\n")
    assert target.read_text() == "new\n"  # not the old tail left behind
    # a new inode: renamed over the target, not rewritten in place (a reader holding the old file
    # keeps reading the whole old content)
    assert target.stat().st_ino != before


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old\n")

    def fail_fsync(fd):  # the disk fills up after part of the text was written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_write.os, "fsync", fail_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomically(target, "new\n" * 1000)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_an_interrupt_during_the_write_removes_the_temporary_too(tmp_path, monkeypatch):
    # BaseException: a Ctrl-C in the middle of a write must not leave its temporary behind either
    target = tmp_path / "out.txt"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_write.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomically(target, "x")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_directory_raises_oserror_and_leaves_nothing(tmp_path):
    target = tmp_path / "missing_dir" / "x.txt"
    with pytest.raises(OSError):
        write_text_atomically(target, "x")
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_is_hidden_beside_the_target_and_unique(tmp_path, monkeypatch):
    # same directory (so the rename stays on one file system), a name of its own per call
    seen: list[Path] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(atomic_write.os, "replace", spy)
    write_text_atomically(tmp_path / "a.txt", "1")
    write_text_atomically(tmp_path / "a.txt", "2")
    assert [p.parent for p in seen] == [tmp_path, tmp_path]
    assert all(p.name.startswith(f".a.txt.{os.getpid()}-") and p.name.endswith(".tmp") for p in seen)
    assert seen[0] != seen[1]


def test_permissions_are_those_of_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomically(tmp_path / "atomic.txt", "x")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o640


def test_json_has_one_trailing_newline_and_its_options(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomically(target, {"b": 1, "a": [1, 2]})
    text = target.read_text()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == json.dumps({"b": 1, "a": [1, 2]}, indent=2) + "\n"  # indent 2, keys in their order
    write_json_atomically(target, {"b": 1, "a": 2}, indent=None, sort_keys=True)
    assert target.read_text() == '{"a": 2, "b": 1}\n'


def test_json_writes_what_json_lacks_as_text(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomically(target, {"path": Path("/exports/d"), "n": 3})
    assert json.loads(target.read_text()) == {"path": "/exports/d", "n": 3}


def test_a_json_failure_leaves_the_old_file(tmp_path):
    # a value json.dumps refuses (a circular list) fails before anything is written
    target = tmp_path / "r.json"
    target.write_text("{}\n")
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError):
        write_json_atomically(target, loop)
    assert target.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
