"""Inter-process file locks (``file_lock``, ``file_lock_if_free``, ``flock_held``).

``flock`` locks belong to an open file description, so two opens of one path in this process contend
as two processes would: the contention below needs no second process. Covered: the lock file and its
directory are created and left in place, an exclusive holder keeps out every other taker (exclusive,
if-free and shared), shared holders admit each other but not an exclusive one, a lock is free again
once its block ends (normally or by an exception), and a blocked ``file_lock`` waits for the holder.
"""

from __future__ import annotations

import threading

import pytest

from automodel_spec.io.file_lock import file_lock, file_lock_if_free, flock_held


def test_file_lock_creates_its_directory_and_leaves_the_lock_file(tmp_path):
    path = tmp_path / "a" / "b" / "export.lock"
    with file_lock(path):
        assert path.is_file()
    # left in place on release, so every later waiter locks the same inode
    assert path.is_file()


def test_if_free_takes_a_free_lock_and_refuses_a_held_one(tmp_path):
    path = tmp_path / "x.lock"
    with file_lock_if_free(path) as got:
        assert got is True
        with file_lock_if_free(path) as second:
            assert second is False  # the first block holds it: nothing is held by the second
    with file_lock_if_free(path) as again:
        assert again is True  # released at the end of the first block


def test_if_free_sees_a_lock_held_by_file_lock(tmp_path):
    path = tmp_path / "x.lock"
    with file_lock(path):
        with file_lock_if_free(path) as got:
            assert got is False
    with file_lock_if_free(path) as got:
        assert got is True


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    path = tmp_path / "x.lock"
    with pytest.raises(RuntimeError), file_lock(path):
        raise RuntimeError("export failed")
    with file_lock_if_free(path) as got:
        assert got is True
    with pytest.raises(RuntimeError), file_lock_if_free(path) as got:
        assert got is True
        raise RuntimeError("export failed")
    with flock_held(path, shared=False, blocking=False) as held:
        assert held is True


def test_file_lock_waits_for_the_holder(tmp_path):
    # thread_local=False in the module: a second thread's lock object contends with the first's, so the
    # waiter can only enter after the holder's block has ended (checked by order, not by time)
    path = tmp_path / "x.lock"
    events: list[str] = []
    waiting = threading.Event()

    def waiter():
        waiting.set()
        with file_lock(path):
            events.append("waiter in")

    with file_lock(path):
        t = threading.Thread(target=waiter)
        t.start()
        waiting.wait(5)
        t.join(0.2)  # it cannot enter while this block holds the lock
        assert t.is_alive() and events == []
        events.append("holder out")
    t.join(10)
    assert not t.is_alive() and events == ["holder out", "waiter in"]


def test_file_lock_reports_a_lock_file_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(OSError), file_lock(tmp_path / "file" / "x.lock"):
        pass


def test_shared_holders_admit_each_other_but_not_an_exclusive_taker(tmp_path):
    path = tmp_path / "gpu0.lock"
    with flock_held(path, shared=True) as a, flock_held(path, shared=True, blocking=False) as b:
        assert (a, b) == (True, True)  # servers starting side by side
        with flock_held(path, shared=False, blocking=False) as ex:
            assert ex is False  # a measurement waits for every reader
        with file_lock_if_free(path) as ex:
            assert ex is False  # filelock's exclusive lock is flock too: the same exclusion
    with flock_held(path, shared=False, blocking=False) as ex:
        assert ex is True


def test_an_exclusive_holder_keeps_out_shared_and_exclusive_takers(tmp_path):
    path = tmp_path / "gpu0.lock"
    with flock_held(path, shared=False) as ex:
        assert ex is True
        with flock_held(path, shared=True, blocking=False) as sh:
            assert sh is False
        with flock_held(path, shared=False, blocking=False) as other:
            assert other is False
        with file_lock_if_free(path) as got:
            assert got is False
    with file_lock(path), flock_held(path, shared=True, blocking=False) as sh:
        assert sh is False  # and a file_lock holder keeps out a flock_held reader


def test_flock_held_never_truncates_the_lock_file(tmp_path):
    # others may hold the file: opening it to lock must not change it
    path = tmp_path / "sub" / "x.lock"
    with flock_held(path, shared=True):
        assert path.exists()
    path.write_text("pid 123")
    with flock_held(path, shared=False):
        assert path.read_text() == "pid 123"


def test_a_blocking_shared_taker_waits_for_the_exclusive_holder(tmp_path):
    path = tmp_path / "x.lock"
    got: list[bool] = []
    started = threading.Event()

    def reader():
        started.set()
        with flock_held(path, shared=True) as held:
            got.append(held)

    with flock_held(path, shared=False):
        t = threading.Thread(target=reader)
        t.start()
        started.wait(5)
        t.join(0.2)
        assert t.is_alive() and got == []  # blocked, not refused
    t.join(10)
    assert got == [True]
