"""Exporter: write a draft as SGLang loads it, beside (never over) the user's checkpoint.

Exports go to a directory keyed by the content of the source files and the export options, so a
second run (or a second sweep job) reuses the first one's result. Writes are atomic (temporary
directory + fsync + rename) and serialized by a file lock, so concurrent jobs never see half a
directory. The manifest, written last, records each file's size, digest and stat; an export is
reused only while its files still match it (stat first, the digest when the stat moved), else it
is rebuilt. Temporary directories of writers that died (SIGKILL) are removed by the next run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from automodel_spec.atomic_write import write_json_atomically
from automodel_spec.errors import SAFETENSORS_INSTALL_HINT, CheckpointError, MissingDependencyError, SpecError
from automodel_spec.file_digest import file_digest, file_stamp
from automodel_spec.file_lock import file_lock
from automodel_spec.preflight import check_against_target, plan_draft, read_json
from automodel_spec.resolve import LEGACY_WEIGHTS, SAFETENSORS_INDEX, ResolvedDraft, weight_files
from automodel_spec.specforge_checkpoint import TRAINING_STATE
from automodel_spec.weights import load_draft_weights, load_eagle_meta

EXPORT_FORMAT = 2  # 2: rope stated in both forms, the serving dtype
MANIFEST = "automodel_spec_export.json"
TOKEN_MAP = "token_map.pt"
EXPORT_FILES = frozenset({"config.json", "model.safetensors", TOKEN_MAP, MANIFEST})
TMP_MARK = ".tmp-"
WRITER = ".automodel_spec_writer.json"  # inside a temporary directory: who is writing it
# .NAME.tmp-PID-XXXXXXXX (mkdtemp's 8 characters; .NAME.tmp-PID-oldXXXXXXXX for a damaged export
# being removed; no PID in directories written by older versions)
_TMP_NAME = re.compile(r"^\..+\.tmp-(?:(?P<pid>\d+)-(?:old)?)?[a-z0-9_]{8}$")
# A temporary directory older than this is a leftover whatever its writer looks like: an export
# takes seconds to minutes, and a writer on another host sharing the cache cannot be checked.
STALE_TEMP_S = 6 * 3600


class ExportWriteError(SpecError):
    """The export cannot be written where it goes (read-only, a full disk, a file in the way)."""


@dataclass
class ExportResult:
    """A servable draft directory and what it took to make it.

    Attributes:
        path: the directory to pass as ``--speculative-draft-model-path``.
        token_map: ``token_map.pt`` inside it, when the algorithm uses one.
        reused: an earlier identical export was found (nothing was written).
        written: the directory was (or, in a dry run, would be) written now.
        notes: what the export changed relative to the checkpoint.
        min_sglang: oldest SGLang release that loads it.
        config: the exported ``config.json``.
    """

    path: Path
    token_map: Path | None = None
    reused: bool = False
    written: bool = False
    notes: list[str] = field(default_factory=list)
    min_sglang: str = "0.5.9"
    config: dict = field(default_factory=dict)


def default_cache_dir() -> Path:
    """``$AUTOMODEL_SPEC_CACHE``, else ``~/.cache/automodel_spec``."""
    return Path(os.environ.get("AUTOMODEL_SPEC_CACHE") or "~/.cache/automodel_spec").expanduser()


def source_files(resolved: ResolvedDraft) -> list[Path]:
    """Every file whose content decides the export."""
    d = resolved.model_dir
    files = [resolved.config_file]
    if resolved.kind == "legacy":
        files.append(d / LEGACY_WEIGHTS)
    elif resolved.kind == "specforge":
        files.append(d / TRAINING_STATE)
    else:
        files += weight_files(d)
        if (d / SAFETENSORS_INDEX).is_file():
            files.append(d / SAFETENSORS_INDEX)
    if resolved.meta_path:
        files.append(resolved.meta_path)
    if resolved.checkpoint_dir and (resolved.checkpoint_dir / "config.yaml").is_file():
        files.append(resolved.checkpoint_dir / "config.yaml")
    return files


def export_key(resolved: ResolvedDraft, architecture: str, aux_layer_ids: list[int] | None,
               memo_dir: Path | None = None, *, remember: bool = True, dtype: str | None = None) -> str:
    """A short hash of the source files' content and the export options.

    ``memo_dir`` remembers each file's digest by its stat (see ``file_digest``), so an unchanged
    checkpoint is read once rather than on every launch.
    """
    h = hashlib.blake2b(digest_size=10)
    options = {"format": EXPORT_FORMAT, "architecture": architecture, "aux": aux_layer_ids}
    if dtype is not None:  # absent for the keys exports had before dtypes were chosen
        options["dtype"] = dtype
    h.update(json.dumps(options).encode())
    for f in source_files(resolved):
        h.update(f.name.encode())
        h.update(file_digest(f, memo_dir, remember=remember).encode())
    return h.hexdigest()


def planned_export_dir(resolved: ResolvedDraft, architecture: str, aux_layer_ids: list[int] | None,
                       export_dir: str | None, cache_dir: Path, *, remember: bool = False,
                       dtype: str | None = None) -> tuple[Path, str]:
    """Where the export of this draft goes, and its key (reads the sources; with ``remember``, it
    also records their digests in the cache)."""
    key = export_key(resolved, architecture, aux_layer_ids, cache_dir / "digests", remember=remember, dtype=dtype)
    if export_dir:
        return Path(export_dir).expanduser().resolve(), key
    return cache_dir / "exports" / f"{architecture}-{key}", key


def export_draft(resolved: ResolvedDraft, architecture: str, *, aux_layer_ids: list[int] | None = None,
                 allow_unsafe_pickle: bool = False, export_dir: str | None = None,
                 cache_dir: Path | None = None, dry_run: bool = False,
                 serving_dtype: tuple[str, str] | None = None, target_config: dict | None = None) -> ExportResult:
    """Check a local draft and write its servable export (or find an identical, intact earlier one).

    An earlier export is reused only when every file still matches the manifest written with it
    (its stat, else its digest); a damaged one is rebuilt and the notes say why.

    Args:
        resolved: a local draft from ``resolve_draft``.
        architecture: the SGLang class to export for (from the algorithm).
        aux_layer_ids: target layers the draft was trained on, overriding what the checkpoint says.
        allow_unsafe_pickle: let a legacy ``draft_model.pt`` be fully unpickled.
        export_dir: write here instead of the cache.
        cache_dir: root of the export cache (default ``default_cache_dir()``).
        dry_run: run every check and report the path, but write nothing.
        serving_dtype: ``(dtype, why)``: the dtype the target is served in; the draft is exported in it.
        target_config: the target's config, to check the draft against before anything is written.

    Raises:
        CheckpointError: the draft cannot be served faithfully or does not fit the target, or
            ``export_dir`` holds something else.
        ExportWriteError: the export cannot be written there (read-only, full disk, a file in the way).
    """
    cache_dir = cache_dir or default_cache_dir()
    dtype = serving_dtype[0] if serving_dtype else None
    explicit = bool(export_dir)
    final, key = planned_export_dir(resolved, architecture, aux_layer_ids, export_dir, cache_dir,
                                    remember=not dry_run, dtype=dtype)
    memo_dir = cache_dir / "digests"
    found = _inspect(final, key, memo_dir, explicit)
    if found.manifest is not None and (dry_run or not _dead_temp_dirs(final.parent)):
        return _checked(_result(final, found.manifest, reused=True), target_config, resolved)
    if dry_run:
        plan = _plan(resolved, architecture, aux_layer_ids, allow_unsafe_pickle, serving_dtype)
        result = ExportResult(path=final, token_map=final / TOKEN_MAP if plan.token_map is not None else None,
                              written=True, notes=plan.notes, min_sglang=plan.min_sglang, config=plan.config)
        result.notes[:0] = [f"would be rebuilt: {found.problem}"] if found.problem else []
        result.notes.extend(_unwritable_notes(final, cache_dir, explicit))
        return _checked(result, target_config, resolved)
    lock_path, lock_note = _lock_path(final, cache_dir, explicit)
    with _export_lock(lock_path, explicit):
        cleaned = _remove_dead_temp_dirs(final.parent)
        found = _inspect(final, key, memo_dir, explicit)  # another job may have finished it while we waited
        if found.manifest is not None:
            result = _result(final, found.manifest, reused=True)
            result.notes.extend(cleaned)
            return _checked(result, target_config, resolved)
        plan = _plan(resolved, architecture, aux_layer_ids, allow_unsafe_pickle, serving_dtype)
        warnings = _target_warnings(plan.config, target_config, resolved)  # refuses before anything is written
        manifest = {
            "key": key, "format": EXPORT_FORMAT, "architecture": architecture,
            "source": str(resolved.model_dir), "meta": str(resolved.meta_path) if resolved.meta_path else None,
            "notes": plan.notes, "min_sglang": plan.min_sglang, "token_map": plan.token_map is not None,
        }
        _write_atomically(final, plan, manifest, explicit, replace=found.problem is not None)
    result = _result(final, manifest, reused=False)
    result.notes[:0] = [f"rebuilt: {found.problem}"] if found.problem else []
    result.notes.extend([n for n in (lock_note,) if n] + cleaned + warnings)
    return result


def _plan(resolved, architecture, aux_layer_ids, allow_unsafe_pickle, serving_dtype):
    _import_weight_libraries()
    config = read_json(resolved.config_file)
    tensors = load_draft_weights(resolved.model_dir, resolved.kind, allow_unsafe_pickle)
    meta = load_eagle_meta(resolved.meta_path)
    return plan_draft(resolved, architecture, config, tensors, meta, aux_layer_ids=aux_layer_ids,
                      dtype=serving_dtype)


def _import_weight_libraries() -> None:
    """Import torch and safetensors with SIGINT / SIGTERM held back until they are loaded.

    A Ctrl-C or SIGTERM that raises inside their native extensions' initialization was seen to abort
    the process (SIGABRT, exit -6) or to leave safetensors half-imported, reported as "not installed"
    (exit 2); held back, it arrives a moment later and unwinds like any other (exit 130 / 143).
    A missing package is reported where it is used.
    """
    held = {signal.SIGINT, signal.SIGTERM}
    mask = getattr(signal, "pthread_sigmask", None)
    before = mask(signal.SIG_BLOCK, held) if mask else None
    try:
        import safetensors.torch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        pass
    finally:
        if mask:
            mask(signal.SIG_SETMASK, before)


def _target_warnings(config: dict, target_config: dict | None, resolved: ResolvedDraft) -> list[str]:
    if target_config is None:
        return []
    return check_against_target(config, target_config, str(resolved.model_dir))


def _checked(result: ExportResult, target_config: dict | None, resolved: ResolvedDraft) -> ExportResult:
    result.notes.extend(_target_warnings(result.config, target_config, resolved))
    return result


# --- what is already there --------------------------------------------------------------------------


@dataclass
class _Found:
    """What ``_inspect`` found where the export goes.

    Attributes:
        manifest: the manifest of a complete, intact export of this key (reuse it).
        problem: why what is there must be rebuilt (``None``: nothing there, or reusable).
    """

    manifest: dict | None = None
    problem: str | None = None


def _inspect(final: Path, key: str, memo_dir: Path, explicit: bool) -> _Found:
    """Is there a complete, intact export of ``key`` at ``final``, something to rebuild, or nothing?

    Raises:
        CheckpointError: an explicit ``draft.export_dir`` holds something that is not this export
            (never overwritten: it may be the user's own files).
    """
    if not os.path.lexists(final):
        return _Found()
    if not final.is_dir() or final.is_symlink():
        if explicit:
            raise _not_ours(final)
        return _Found(problem=f"{final} is not a directory")
    entries = {p.name for p in final.iterdir()}
    if not entries:  # an empty directory the user created for us
        return _Found()
    manifest, why = _load_manifest(final)
    if manifest is None:
        if explicit and (MANIFEST not in entries or not entries <= EXPORT_FILES):
            raise _not_ours(final)
        return _Found(problem=f"its manifest {MANIFEST} {why}")
    if manifest.get("key") != key:
        if explicit:
            raise CheckpointError(
                f"draft.export_dir={final} holds an export of a different draft or options (key "
                f"{manifest.get('key')} != {key}). Choose an empty directory or delete it."
            )
        return _Found(problem=f"its manifest names another export (key {manifest.get('key')}, expected {key})")
    damage = _damage(final, manifest, memo_dir)
    return _Found(problem=damage) if damage else _Found(manifest=manifest)


def _not_ours(final: Path) -> CheckpointError:
    return CheckpointError(
        f"draft.export_dir={final} exists and is not an export of this project; refusing to write into "
        "it. Choose an empty or new directory."
    )


def _load_manifest(d: Path) -> tuple[dict | None, str]:
    """The manifest, or ``None`` and what is wrong with it."""
    try:
        data = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "is missing"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    except ValueError:
        return None, "is damaged (not valid JSON)"
    if not isinstance(data, dict):
        return None, "is damaged (not a JSON object)"
    return data, ""


def _damage(final: Path, manifest: dict, memo_dir: Path) -> str | None:
    """What no longer matches the manifest (``None``: every file is as written)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "its manifest lists no file sizes and digests (written by an older automodel-spec)"
    for name, record in files.items():
        problem = _file_problem(final / name, record, memo_dir)
        if problem:
            return f"{name} {problem}"
    return None


def _file_problem(path: Path, record, memo_dir: Path) -> str | None:
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


# --- writing ----------------------------------------------------------------------------------------


def _lock_path(final: Path, cache_dir: Path, explicit: bool) -> tuple[Path, str | None]:
    """The lock that serializes writers of ``final``, and a note when it cannot be in the cache.

    Keyed by the destination, so jobs writing one explicit export_dir serialize too. An explicit
    ``draft.export_dir`` works with a read-only cache: its lock then lives beside it.
    """
    name = hashlib.blake2b(str(final).encode(), digest_size=10).hexdigest()
    in_cache = cache_dir / "locks" / f"{name}.lock"
    why = _unwritable(in_cache.parent) if explicit else None
    if why is None:
        return in_cache, None
    beside = final.parent / f".{final.name}.lock"
    return beside, (f"cache_dir {cache_dir} cannot be written ({why}): the export lock is kept beside the "
                    f"export ({beside}) and source digests are not remembered (the draft is re-read each run)")


@contextmanager
def _export_lock(lock_path: Path, explicit: bool) -> Iterator[None]:
    """``file_lock``, with a lock that cannot be created reported as a place that cannot be written."""
    stack = ExitStack()
    try:
        stack.enter_context(file_lock(lock_path))
    except OSError as exc:
        raise _write_error(exc, lock_path.parent, explicit) from exc
    with stack:
        yield


def _write_atomically(final: Path, plan, manifest: dict, explicit: bool, *, replace: bool = False) -> None:
    """Write the export into a temporary directory, then rename it to ``final``.

    The temporary directory is named after this process (``.NAME.tmp-PID-XXXX``) and records its
    writer, so a later run can tell a dead writer's leftovers from a live one's work.
    ``replace``: ``final`` holds a damaged export, discarded just before the rename.
    """
    try:
        from safetensors.torch import save_file
    except ImportError as exc:
        raise MissingDependencyError("safetensors", SAFETENSORS_INSTALL_HINT, "export the draft") from exc
    import torch

    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}{os.getpid()}-", dir=final.parent))
    except OSError as exc:
        raise _write_error(exc, final.parent, explicit, plan) from exc
    try:
        write_json_atomically(tmp / WRITER, _writer_identity(), indent=None)
        save_file(plan.tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_json_atomically(tmp / "config.json", plan.config, sort_keys=True)
        if plan.token_map is not None:
            torch.save(plan.token_map, tmp / TOKEN_MAP)
        (tmp / WRITER).unlink()
        manifest["files"] = _seal_files(tmp)
        write_json_atomically(tmp / MANIFEST, manifest)  # last: marks it complete
        _seal(tmp / MANIFEST)
        os.chmod(tmp, 0o755)
        _fsync(tmp)
        if replace:
            _discard(final)
        elif final.exists():  # an empty directory the user created for us
            final.rmdir()
        os.rename(tmp, final)
        _fsync(final.parent)  # the rename itself survives a crash
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_os_error(exc):
            raise _write_error(exc, final.parent, explicit, plan) from exc
        raise


def _seal_files(d: Path) -> dict[str, dict]:
    """Make every file readable by a server running as another user and durable; record what it is.

    The stamp is taken after chmod and fsync (chmod changes ctime), so an untouched file matches it.
    """
    records = {}
    for f in sorted(d.iterdir()):
        _seal(f)
        records[f.name] = {"size": f.stat().st_size, "digest": file_digest(f), "stamp": file_stamp(f)}
    return records


def _seal(f: Path) -> None:
    os.chmod(f, 0o644)
    _fsync(f)


def _discard(path: Path) -> None:
    """Remove a damaged export: renamed aside first (as a temp dir of this process), so a kill
    half-way leaves something the next run removes, never a half-deleted export."""
    if not path.is_dir() or path.is_symlink():
        path.unlink()
        return
    aside = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-old{uuid.uuid4().hex[:8]}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_os_error(exc: BaseException) -> bool:
    """An OSError, or safetensors' own error wrapping one (it reports "os error N")."""
    return isinstance(exc, OSError) or (type(exc).__name__ == "SafetensorError" and "os error" in str(exc))


def _is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in str(exc) \
        or "No space left" in str(exc)


def _write_error(exc: BaseException, where: Path, explicit: bool, plan=None) -> ExportWriteError:
    """The message for an export that cannot be written: the directory, why, and what to do."""
    fix = ("choose another draft.export_dir" if explicit
           else "set cache_dir=DIR (or $AUTOMODEL_SPEC_CACHE) to another directory, or draft.export_dir=DIR")
    if _is_disk_full(exc):
        need = sum(t.numel() * t.element_size() for t in plan.tensors.values()) if plan is not None else 0
        size = f" (the export needs about {need / 1e6:.0f} MB)" if need else ""
        return ExportWriteError(f"no space left on the device holding {where} while writing the export{size}: "
                                f"free space there, or {fix} on a disk with room.")
    reason = getattr(exc, "strerror", None) or str(exc)
    return ExportWriteError(f"cannot write the export under {where}: {reason}. Make it writable, or {fix}.")


def _unwritable(d: Path) -> str | None:
    """Why nothing can be created in directory ``d`` (created if needed), or ``None`` if it can."""
    p = d
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a directory"
    if not os.access(p, os.W_OK | os.X_OK):  # false on a read-only file system, even for root
        return f"{p} is not writable"
    return None


def _unwritable_notes(final: Path, cache_dir: Path, explicit: bool) -> list[str]:
    """print_only: what a real run could not write (a note each, not a failure)."""
    why = _unwritable(final.parent)
    if why is not None:
        where = "draft.export_dir" if explicit else "the export cache"
        fix = "choose another draft.export_dir" if explicit else "set cache_dir=DIR or draft.export_dir=DIR"
        return [f"{where} cannot be written ({why}): a real run would fail here; {fix}"]
    if explicit:
        return [n for n in (_lock_path(final, cache_dir, explicit)[1],) if n]
    return []


# --- leftovers of interrupted exports ---------------------------------------------------------------


def _writer_identity() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}


def _dead_temp_dirs(parent: Path) -> list[Path]:
    """Temporary export directories in ``parent`` whose writer is gone (killed, e.g. by SIGKILL)."""
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(".") and TMP_MARK in e.name]
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and _writer_gone(Path(e.path))]


def _writer_gone(d: Path) -> bool:
    """Its writer is not alive on this host, or the directory is older than any export takes."""
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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    now = _proc_stat(pid)
    if now is None:
        return True  # no /proc: the pid is all we can check
    state, started = now
    return state not in ("Z", "X") and (start is None or started == start)


def _process_start(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks since boot)`` from ``/proc``, or ``None`` without it."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remove_dead_temp_dirs(parent: Path) -> list[str]:
    """Remove what killed exports left in ``parent``; a note naming them (empty if none)."""
    removed = []
    for d in _dead_temp_dirs(parent):
        shutil.rmtree(d, ignore_errors=True)
        if not os.path.lexists(d):
            removed.append(d.name)
    if not removed:
        return []
    return [f"removed {len(removed)} unfinished export(s) left by interrupted runs in {parent}: "
            + ", ".join(removed)]


def _result(d: Path, manifest: dict, reused: bool) -> ExportResult:
    return ExportResult(
        path=d, token_map=d / TOKEN_MAP if manifest.get("token_map") else None, reused=reused,
        written=not reused, notes=list(manifest.get("notes", [])), min_sglang=manifest.get("min_sglang", "0.5.9"),
        config=read_json(d / "config.json"),
    )
