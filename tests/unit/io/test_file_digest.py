"""Digests remembered by stat: reused while a file is unchanged, recomputed after any rewrite."""

from __future__ import annotations

import hashlib
import json
import os
import time

from automodel_spec.io.file_digest import file_digest, is_remembered


def _blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _memo(memo_dir):
    (path,) = memo_dir.iterdir()
    return path


def test_digest_of_the_content_without_a_memo(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    assert file_digest(f) == _blake(b"abc" * 1000)


def test_an_unchanged_file_is_not_read_again(tmp_path):
    f, memo_dir = tmp_path / "w.bin", tmp_path / "digests"
    f.write_bytes(b"weights")
    assert file_digest(f, memo_dir) == _blake(b"weights")
    memo = _memo(memo_dir)
    saved = json.loads(memo.read_text())
    memo.write_text(json.dumps({**saved, "digest": "remembered"}))  # proves the memo is what answers
    assert file_digest(f, memo_dir) == "remembered"


def test_a_rewrite_is_seen_even_with_the_same_size_and_mtime(tmp_path):
    f, memo_dir = tmp_path / "w.bin", tmp_path / "digests"
    f.write_bytes(b"weights-1")
    st = os.stat(f)
    file_digest(f, memo_dir)
    time.sleep(0.01)
    f.write_bytes(b"weights-2")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back; ctime cannot be
    assert os.stat(f).st_size == st.st_size and os.stat(f).st_mtime_ns == st.st_mtime_ns
    assert file_digest(f, memo_dir) == _blake(b"weights-2")


def test_remember_false_writes_nothing_and_a_broken_memo_is_ignored(tmp_path):
    f, memo_dir = tmp_path / "w.bin", tmp_path / "digests"
    f.write_bytes(b"x")
    assert file_digest(f, memo_dir, remember=False) == _blake(b"x")
    assert not memo_dir.exists()
    file_digest(f, memo_dir)
    _memo(memo_dir).write_text("{ half")
    assert file_digest(f, memo_dir) == _blake(b"x")
    _memo(memo_dir).write_text("[1, 2]")  # JSON, but not the memo's object
    assert not is_remembered(f, memo_dir)
    assert file_digest(f, memo_dir) == _blake(b"x")


def test_is_remembered_says_whether_the_file_would_be_read(tmp_path):
    f, memo_dir = tmp_path / "w.bin", tmp_path / "digests"
    f.write_bytes(b"weights")
    assert not is_remembered(f, memo_dir) and not is_remembered(f, None)
    file_digest(f, memo_dir)
    assert is_remembered(f, memo_dir)
    f.write_bytes(b"other")
    assert not is_remembered(f, memo_dir)


def test_an_unwritable_memo_dir_still_gives_the_digest(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    assert file_digest(f, blocker / "digests") == _blake(b"x")
