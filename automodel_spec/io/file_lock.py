"""Inter-process file locks, for work that parallel sweep jobs share.

``filelock.FileLock`` (``flock`` on POSIX): the lock is released by the kernel when its holder dies,
even by SIGKILL, so a killed export never blocks the next one. The lock file stays in place on
release, so every waiter locks the same inode. ``flock_held`` adds the shared mode (readers and a
writer: servers starting side by side on one GPU, one measurement alone), which ``filelock`` lacks;
both are ``flock`` on the same files, so they exclude each other as the kernel says.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


@contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created, with its directory, if needed) for the ``with`` block.

    Raises:
        OSError: the lock file cannot be created (read-only directory, a file in the way).
    """
    with _lock(lock_path, timeout=-1):
        yield


@contextmanager
def file_lock_if_free(lock_path: Path) -> Iterator[bool]:
    """Take the lock on ``lock_path`` only if nobody holds it: the block gets ``True`` when it holds
    the lock, ``False`` when another holder has it (nothing is held then)."""
    lock = _lock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _lock(lock_path: Path, timeout: float) -> FileLock:
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # thread_local=False: one lock object per call, so threads of one process serialize too
    return FileLock(str(lock_path), timeout=timeout, thread_local=False)


@contextmanager
def flock_held(lock_path: Path, *, shared: bool, blocking: bool = True) -> Iterator[bool]:
    """Hold ``lock_path`` shared (many holders) or exclusive (one) for the ``with`` block.

    The block gets ``True`` while it holds the lock; with ``blocking=False`` it gets ``False`` at once
    when the lock is taken in a conflicting mode (nothing is held then). Released by the kernel when
    the holder dies, like ``file_lock``.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)  # never truncated: others may hold it
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
