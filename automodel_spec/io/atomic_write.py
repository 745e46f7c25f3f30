"""Write a file so that readers see the old content or the new, never half of it.

The text goes to a temporary file beside the target (same directory, so same file system), is
flushed to disk, and is renamed over the target: ``rename`` is atomic on POSIX. The temporary name
is unique per call (process id and a random part), so parallel writers never share one; a writer
that dies leaves at most a ``.NAME.*.tmp`` file, never a damaged ``NAME``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step.

    The file gets the permissions a plain ``open(path, "w")`` would give it (the umask applies).

    Raises:
        OSError: the directory cannot be written (the temporary file is removed).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_json_atomically(path: Path, data, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """``write_text_atomically`` of ``data`` as JSON, one trailing newline; values JSON lacks become ``str``."""
    write_text_atomically(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=str) + "\n")
