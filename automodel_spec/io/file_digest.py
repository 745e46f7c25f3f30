"""Content digests of large files, remembered by their stat so an unchanged checkpoint is read once.

Hashing a draft's weights (over a GB at Llama-3.1-8B shapes) takes seconds on every launch. A digest
is reused only while the file's size, mtime, ctime and inode are what they were when it was
computed; ctime cannot be set back from user space, so any rewrite of the file invalidates it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from automodel_spec.io.atomic_write import write_json_atomically

_CHUNK = 1 << 22


def file_digest(path: Path, memo_dir: Path | None = None, *, remember: bool = True) -> str:
    """The blake2b digest of ``path``'s content (hex).

    Args:
        path: the file.
        memo_dir: where digests are remembered; ``None`` always reads the file.
        remember: write the digest to ``memo_dir`` (``False`` reads the memo but writes nothing).
    """
    stamp = file_stamp(path)
    memo = _memo_path(path, memo_dir) if memo_dir else None
    if memo is not None and (saved := _remembered(memo, stamp)) is not None:
        return saved
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if memo is not None and remember:
        _write_memo(memo, {"path": str(Path(path).resolve()), "stamp": stamp, "digest": digest})
    return digest


def is_remembered(path: Path, memo_dir: Path | None) -> bool:
    """Whether ``file_digest`` would answer from ``memo_dir`` without reading ``path``."""
    if memo_dir is None:
        return False
    try:
        stamp = file_stamp(path)
    except OSError:
        return False
    return _remembered(_memo_path(path, memo_dir), stamp) is not None


def _remembered(memo: Path, stamp: dict[str, int]) -> str | None:
    """The digest ``memo`` holds for a file of ``stamp``; ``None`` when it holds none (missing, damaged, of
    another stamp)."""
    try:
        saved = json.loads(memo.read_text())
        if saved.get("stamp") == stamp and isinstance(saved.get("digest"), str):
            return saved["digest"]
    except (OSError, ValueError, AttributeError):  # AttributeError: a memo that is JSON but no object
        pass
    return None


def file_stamp(path: Path) -> dict[str, int]:
    """What changes whenever ``path`` is rewritten: size, mtime, ctime and inode.

    Raises:
        OSError: the file cannot be stat'ed (e.g. it was deleted).
    """
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _memo_path(path: Path, memo_dir: Path) -> Path:
    # fsencode: a path's bytes need not be UTF-8 (Python carries them as surrogates, which .encode() refuses)
    name = hashlib.blake2b(os.fsencode(Path(path).resolve()), digest_size=12).hexdigest()
    return Path(memo_dir) / f"{name}.json"


def _write_memo(memo: Path, data: dict) -> None:
    try:  # a memo that cannot be written costs a re-read next time, nothing else
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(memo, data, indent=None)
    except OSError:
        pass
