"""An exclusive inter-process file lock, for work that parallel sweep jobs share.

``filelock.FileLock`` (``flock`` on POSIX): the lock is released by the kernel when its holder dies,
even by SIGKILL, so a killed export never blocks the next one. The lock file stays in place on
release, so every waiter locks the same inode.
"""

from __future__ import annotations

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
