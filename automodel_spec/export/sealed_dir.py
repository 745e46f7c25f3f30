"""A directory written whole or not at all, and trusted only while it is as it was written.

The sealed-directory store under the export cache and the demo pair: a writer fills a temporary
directory beside the destination, seals it (every file readable by all and fsynced; with a manifest,
each file's size, digest and stat recorded in it, written last), and renames it into place, so a
reader sees the old directory or the new one, never half of one. The temporary name holds the
writer's pid (``.NAME.tmp-PID-XXXXXXXX``) and the directory records its writer, so a later run can
tell a dead writer's leftovers (SIGKILL) from a live one's work and remove them. Serializing writers
(a lock) and what a rebuild may replace are the caller's: they differ per store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from automodel_spec.errors import CheckpointError
from automodel_spec.io.atomic_write import write_json_atomically
from automodel_spec.io.file_digest import file_digest, file_stamp
from automodel_spec.io.json_file import read_json_value
from automodel_spec.io.process_state import process_running, process_start

TMP_MARK = ".tmp-"
WRITER = ".automodel_spec_writer.json"  # inside a temporary directory: who is writing it
# .NAME.tmp-PID-XXXXXXXX (8 random characters, as mkdtemp gave before; .NAME.tmp-PID-oldXXXXXXXX for a sealed
# directory being removed; no PID in directories written by older versions)
_TMP_NAME = re.compile(r"^\..+\.tmp-(?:(?P<pid>\d+)-(?:old)?)?[a-z0-9_]{8}$")
# A temporary directory older than this is a leftover whatever its writer looks like: a write
# takes seconds to minutes, and a writer on another host sharing the cache cannot be checked.
STALE_TEMP_S = 6 * 3600


def write_sealed_dir(final: Path, fill: Callable[[Path], None], *, manifest_name: str | None = None,
                     manifest: dict | None = None, discard_old: Callable[[Path], None] | None = None,
                     keep_finished: bool = False) -> bool:
    """Fill a temporary directory beside ``final``, seal it, and rename it to ``final``.

    Args:
        final: the destination; absent, or an empty directory (removed just before the rename).
        fill: writes the contents into the directory it is given.
        manifest_name: with ``manifest``, the file written last into the directory: ``manifest``
            plus ``files`` (each file's size, digest and stat, see ``sealed_damage``).
        manifest: what the manifest records besides the files.
        discard_old: removes what is at ``final`` (a damaged earlier directory) just before the rename.
        keep_finished: another writer may finish ``final`` first (no lock is held); then its
            directory is kept and ours removed.

    Returns:
        ``False`` when, with ``keep_finished``, another writer's directory was there first.

    Raises:
        OSError: the directory cannot be written (nothing is left behind: the temporary directory is
            removed on any failure, a signal included); and whatever ``fill`` or ``discard_old`` raise.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    # Named before it is made, so a signal at any moment after leaves nothing the cleanup below
    # does not know of (the name holds our pid: no other live process uses it).
    tmp = final.parent / f".{final.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.mkdir(tmp, 0o700)
        write_json_atomically(tmp / WRITER, _writer_identity(), indent=None)
        fill(tmp)
        (tmp / WRITER).unlink()
        records = _seal_files(tmp)
        if manifest_name is not None:
            write_json_atomically(tmp / manifest_name, {**(manifest or {}), "files": records})  # last: complete
            _seal(tmp / manifest_name)
        os.chmod(tmp, 0o755)
        _fsync(tmp)
        if discard_old is not None:
            discard_old(final)
        elif os.path.lexists(final):  # an empty directory made for us
            try:
                final.rmdir()
            except OSError:
                if not keep_finished:
                    raise
        try:
            os.rename(tmp, final)
        except OSError:
            if not (keep_finished and final.is_dir()):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another writer finished first: its directory stays
            return False
        _fsync(final.parent)  # the rename itself survives a crash
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def load_manifest(d: Path, manifest_name: str) -> tuple[dict | None, str]:
    """The manifest of the sealed directory ``d``, or ``None`` and what is wrong with it."""
    if not os.path.lexists(d / manifest_name):
        return None, "is missing"
    try:
        data = read_json_value(d / manifest_name)
    except CheckpointError as exc:  # bounded: a manifest planted by someone else cannot hang the run
        if isinstance(exc.__cause__, OSError):
            return None, f"cannot be read ({exc.__cause__.strerror})"
        return None, "is damaged (not valid JSON)"
    if not isinstance(data, dict):
        return None, "is damaged (not a JSON object)"
    return data, ""


def sealed_damage(d: Path, manifest: dict, memo_dir: Path | None) -> str | None:
    """What in ``d`` no longer matches its manifest (``None``: every file is as written).

    Stat first; the full digest only when the stat moved (remembered by stat in ``memo_dir``).
    """
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "its manifest lists no file sizes and digests (written by an older automodel-spec)"
    for name, record in files.items():
        problem = _file_problem(d / name, record, memo_dir)
        if problem:
            return f"{name} {problem}"
    return None


def discard_dir(path: Path, owned: frozenset[str]) -> bool:
    """Remove the sealed directory ``path`` if it holds only the names in ``owned``.

    Renamed aside first (as a temporary directory of this process), so a kill half-way leaves
    something the next run removes, never a half-deleted directory.

    Returns:
        ``False`` when ``path`` is not a directory or holds anything else (nothing is removed: it may
        be someone's own file).
    """
    entries = {p.name for p in path.iterdir()} if path.is_dir() and not path.is_symlink() else None
    if entries is None or not entries <= owned:
        return False
    aside = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-old{uuid.uuid4().hex[:8]}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def dead_temp_dirs(parent: Path) -> list[Path]:
    """Temporary directories in ``parent`` whose writer is gone (killed, e.g. by SIGKILL)."""
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(".") and TMP_MARK in e.name]
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and _writer_gone(Path(e.path))]


def remove_dead_temp_dirs(parent: Path) -> list[str]:
    """Remove what killed writers left in ``parent``; the names removed."""
    removed = []
    for d in dead_temp_dirs(parent):
        shutil.rmtree(d, ignore_errors=True)
        if not os.path.lexists(d):
            removed.append(d.name)
    return removed


# --- sealing -----------------------------------------------------------------------------------------


def _seal_files(d: Path) -> dict[str, dict]:
    """Make every file under ``d`` readable by a server running as another user and durable; record it.

    The stamp is taken after chmod and fsync (chmod changes ctime), so an untouched file matches it.
    Symlinks are left as they are (not followed, not recorded).
    """
    records = {}
    for f in sorted(d.rglob("*")):
        if f.is_symlink() or not f.is_file():
            continue
        _seal(f)
        records[f.relative_to(d).as_posix()] = {"size": f.stat().st_size, "digest": file_digest(f),
                                                "stamp": file_stamp(f)}
    for sub in sorted((p for p in d.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        _fsync(sub)  # the entries of each folder below, deepest first
    return records


def _seal(f: Path) -> None:
    os.chmod(f, 0o644)
    _fsync(f)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_problem(path: Path, record, memo_dir: Path | None) -> str | None:
    """Why ``path`` differs from its manifest record; stat first, the full digest only when it moved."""
    if not isinstance(record, dict):
        return "has no valid entry in the manifest"
    try:
        stamp = file_stamp(path)
    except FileNotFoundError:
        return "was deleted since it was written"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stamp["size"] != record.get("size"):
        return f"changed since it was written ({stamp['size']} bytes now, {record.get('size')} written)"
    if stamp == record.get("stamp"):
        return None  # untouched since it was written (any rewrite changes ctime)
    try:  # copied, restored or touched: the content decides (remembered by stat in memo_dir)
        digest = file_digest(path, memo_dir)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None if digest == record.get("digest") else "changed since it was written (its content differs)"


# --- leftovers of killed writers --------------------------------------------------------------------


def _writer_identity() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": process_start(os.getpid())}


def _writer_gone(d: Path) -> bool:
    """Its writer is not alive on this host, or the directory is older than any write takes."""
    m = _TMP_NAME.match(d.name)
    if m is None:
        return False  # not a name we give: never ours to remove
    try:
        age = time.time() - d.stat().st_mtime
    except OSError:
        return False
    if age > STALE_TEMP_S:
        return True
    if m["pid"] is None:
        return False  # an older automodel-spec's name: only the age tells
    writer = _read_json(d / WRITER)
    if writer.get("host", socket.gethostname()) != socket.gethostname():
        return False  # a shared cache: that host's processes cannot be seen from here; the age decides
    return not _alive(int(m["pid"]), writer.get("start"))


def _alive(pid: int, start: int | None) -> bool:
    """``pid`` runs, and is the same process (same start time) as the writer recorded."""
    if not process_running(pid):
        return False
    now = process_start(pid)
    return start is None or now is None or now == start  # no /proc: the pid is all we can check


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
