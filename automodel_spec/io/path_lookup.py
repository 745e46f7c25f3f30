"""What a path the user gave is on disk, in words: missing, a symlink loop, a broken link, a directory
where a file goes, or a file where a directory goes.

``Path.exists()`` is ``False`` for all of the first three alike (a loop and a dangling link included),
so a message built on it alone names the wrong cause; the owners of a path's message ask here.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def missing_reason(path: Path) -> str:
    """Why ``path`` cannot be found, for a path whose ``exists()`` is false: a phrase after its name.

    ``does not exist``, ``is a symlink loop (...)``, ``is a broken symlink to ...``, or ``cannot be
    looked up (...)`` (a component that is a file, no permission to enter a directory).
    """
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return ("is a symlink loop (a link that leads back to itself): fix or remove the link, or give the "
                    "real path")
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"is a broken symlink to {os.readlink(path)}, which does not exist: fix the link or give the real path"
        if exc.errno == errno.ENOTDIR:
            return f"cannot be looked up: {_file_on_the_way(path)} is a file, not a directory"
        if exc.errno != errno.ENOENT:
            return f"cannot be looked up ({exc.strerror}): check that this user may enter every directory on it"
        return "does not exist"
    return "exists"  # it does after all (it appeared meanwhile)


def file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file (a phrase after its name), or ``None`` when it is one."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a directory, not a file"
    if not os.path.lexists(path) or not path.exists():
        return missing_reason(path)
    return "is not a regular file (a device, socket or fifo)"


def directory_problem(d: Path) -> str | None:
    """Why nothing can be created in directory ``d`` (created if needed), or ``None`` if it can.

    Walks up to the first part that exists: it must be a directory this user may write.
    """
    p = d
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a directory"
    if not os.access(p, os.W_OK | os.X_OK):  # false on a read-only file system, even for root
        return f"{p} is not writable"
    return None


def _file_on_the_way(path: Path) -> Path:
    """The first part of ``path`` that is not a directory (the reason it cannot be looked up)."""
    for parent in reversed(Path(path).parents):
        if os.path.lexists(parent) and not parent.is_dir():
            return parent
    return Path(path)


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a path here (unknown ``~user``, too long), or ``None``."""
    if value.startswith("~"):
        user = value[1:].split("/", 1)[0]
        try:
            value = str(Path(value).expanduser())
        except RuntimeError:
            who = f"there is no user {user!r} on this machine" if user else "$HOME is not set and there is no home"
            return f"'~{user}' cannot be expanded: {who}. Give the path without '~', or the right user name."
    path_max, name_max = _limits()
    size = len(os.fsencode(value))
    if size >= path_max:
        return (f"the path is {size} bytes long; this system allows at most {path_max - 1} (PATH_MAX). "
                "Move the files to a shorter path, or link them from one.")
    long_part = next((p for p in value.split("/") if len(os.fsencode(p)) > name_max), None)
    if long_part is not None:
        return (f"the name {shorten_path(long_part)} is {len(os.fsencode(long_part))} bytes long; this file system "
                f"allows at most {name_max} per name (NAME_MAX). Rename it.")
    return None


def _limits() -> tuple[int, int]:
    """PATH_MAX and NAME_MAX of the root file system (Linux defaults where ``pathconf`` is missing)."""
    try:
        return os.pathconf("/", "PC_PATH_MAX"), os.pathconf("/", "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        return 4096, 255


def shorten_path(value: str, limit: int = 80) -> str:
    """``value`` cut in the middle when longer than ``limit`` characters, for messages."""
    return value if len(value) <= limit else f"{value[:40]}...{value[-30:]} ({len(value)} characters)"
