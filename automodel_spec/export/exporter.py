"""Exporter: write a draft as SGLang loads it, beside (never over) the user's checkpoint.

Exports go to a directory keyed by the content of the source files and the export options, so a
second run (or a second sweep job) reuses the first one's result. An export is a sealed directory
(``sealed_dir``: temporary directory + fsync + rename, a manifest written last with each file's size,
digest and stat), so concurrent jobs never see half a directory; an export is reused only while its
files still match it (stat first, the digest when the stat moved), else it is rebuilt. Temporary
directories of writers that died (SIGKILL) are removed by the next run. What is the export's own:
the content key, the lock that serializes its writers, what a rebuild may replace (never files it
did not write) and the messages.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from automodel_spec.config.sglang_options import OLDEST_RELEASE
from automodel_spec.draft.draft_sources import DraftSources
from automodel_spec.draft.resolve import ResolvedDraft
from automodel_spec.errors import (
    SAFETENSORS_INSTALL_HINT,
    CheckpointError,
    ConfigError,
    MissingDependencyError,
    SpecError,
)
from automodel_spec.export.draft_plan import DraftPlan
from automodel_spec.export.preflight import check_against_target, plan_draft
from automodel_spec.export.sealed_dir import (
    dead_temp_dirs,
    discard_dir,
    load_manifest,
    remove_dead_temp_dirs,
    sealed_damage,
    write_sealed_dir,
)
from automodel_spec.io.atomic_write import write_json_atomically
from automodel_spec.io.file_digest import file_digest
from automodel_spec.io.file_lock import file_lock
from automodel_spec.io.json_file import read_json
from automodel_spec.io.path_lookup import directory_problem
from automodel_spec.io.torch_import import import_torch

EXPORT_FORMAT = 2  # 2: rope stated in both forms, the serving dtype
MANIFEST = "automodel_spec_export.json"
TOKEN_MAP = "token_map.pt"
EXPORT_FILES = frozenset({"config.json", "model.safetensors", TOKEN_MAP, MANIFEST})


class ExportWriteError(SpecError):
    """The export cannot be written where it goes (read-only, a full disk, a file in the way)."""


@dataclass
class ExportResult:
    """A servable draft directory and what it took to make it.

    Attributes:
        path: the directory to pass as ``--speculative-draft-model-path``.
        token_map: ``token_map.pt`` inside it, when the algorithm uses one.
        reused: an earlier identical export was found (nothing was written).
        notes: what the export changed relative to the checkpoint.
        min_sglang: oldest SGLang release that loads it.
        config: the exported ``config.json``.
        key: the content key (``export_key``: the sources' digests and the export's options); an explicit
            ``draft.export_dir`` keeps its path whatever it holds, this names what it holds.
    """

    path: Path
    token_map: Path | None = None
    reused: bool = False
    notes: list[str] = field(default_factory=list)
    min_sglang: str = OLDEST_RELEASE
    config: dict = field(default_factory=dict)
    key: str | None = None


def default_cache_dir() -> Path:
    """``$AUTOMODEL_SPEC_CACHE``, else ``~/.cache/automodel_spec``."""
    return Path(os.environ.get("AUTOMODEL_SPEC_CACHE") or "~/.cache/automodel_spec").expanduser()


def export_key(resolved: ResolvedDraft, architecture: str, aux_layer_ids: list[int] | None,
               memo_dir: Path | None = None, *, remember: bool = True, dtype: str | None = None) -> str:
    """A short hash of the source files' content (``resolved.source_files``) and the export options.

    ``memo_dir`` remembers each file's digest by its stat (see ``file_digest``), so an unchanged
    checkpoint is read once rather than on every launch.
    """
    h = hashlib.blake2b(digest_size=10)
    options = {"format": EXPORT_FORMAT, "architecture": architecture, "aux": aux_layer_ids}
    if dtype is not None:  # absent for the keys exports had before dtypes were chosen
        options["dtype"] = dtype
    h.update(json.dumps(options).encode())
    for f in resolved.source_files:
        h.update(os.fsencode(f.name))  # a name that is not UTF-8 is bytes smuggled in a str (surrogateescape)
        h.update(file_digest(f, memo_dir, remember=remember).encode())
    return h.hexdigest()


def check_outside_source(draft_path: str, resolved: ResolvedDraft, places: dict[str, Path]) -> None:
    """Refuse an export location inside the draft's own files, which this project only ever reads.

    Args:
        draft_path: ``draft.path`` as given.
        resolved: where its files are (the checkpoint and model directories count as the source too).
        places: the locations the export writes, by the setting that names them (``draft.export_dir``,
            ``cache_dir``): the export itself, its lock and the sources' digests.

    Raises:
        ConfigError: naming the setting, both paths, and what to do.
    """
    given = Path(draft_path).expanduser()
    sources = [p for p in (given.parent if given.is_file() else given, resolved.model_dir, resolved.checkpoint_dir)
               if p is not None]
    for key, place in places.items():
        real = _real(place)
        for source in sources:
            root = _real(source)
            if real == root or root in real.parents:
                raise ConfigError(
                    f"{key}={place} lies inside draft.path={draft_path} ({real} is under {root}, symlinks "
                    "resolved): the export, its lock and digests would be written into the checkpoint, which this "
                    f"project only reads. Set {key} to a directory outside it."
                )


def _real(path: Path) -> Path:
    """``path`` with ``~`` and every symlink that exists resolved (as it is as far as it can be)."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare it as written
        return Path(os.path.abspath(Path(path).expanduser()))


def planned_export_dir(resolved: ResolvedDraft, architecture: str, aux_layer_ids: list[int] | None,
                       export_dir: str | None, cache_dir: Path, *, remember: bool = False,
                       dtype: str | None = None) -> tuple[Path, str]:
    """Where the export of this draft goes, and its key (reads the sources; with ``remember``, it
    also records their digests in the cache)."""
    key = export_key(resolved, architecture, aux_layer_ids, cache_dir / "digests", remember=remember, dtype=dtype)
    if export_dir:
        return Path(export_dir).expanduser().resolve(), key
    return cache_dir / "exports" / f"{architecture}-{key}", key


@dataclass
class ExportPlace:
    """Where an export goes and what is there now (``locate_export``); nothing is written.

    Attributes:
        path: the export directory.
        key: the hash of the sources' content and the export options (``export_key``).
        explicit: it is ``draft.export_dir`` (never overwritten unless it holds our export).
        cache_dir: the cache root (digest memos, locks).
        found: what is there: the manifest of an intact export of this key (reuse it), or why what
            is there must be rebuilt.
        config: the reusable export's ``config.json``.
        notes: what taking the export's lock found (dead writers' leftovers removed, where the lock is).
    """

    path: Path
    key: str
    explicit: bool
    cache_dir: Path
    found: _Found
    config: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reusable(self) -> bool:
        return self.found.manifest is not None


@dataclass
class ExportPlan:
    """What an export holds and where: made by ``plan_export`` from the sources read once.

    Attributes:
        place: where it goes and what is there.
        source: the draft's directory, for messages.
        config: the export's ``config.json`` (planned, or the reused export's).
        draft: the servable draft to write; ``None`` when the intact export at ``place`` is reused.
        manifest: what the manifest records besides each file's size and digest.
    """

    place: ExportPlace
    source: str
    config: dict
    draft: DraftPlan | None = None
    manifest: dict = field(default_factory=dict)


def locate_export(resolved: ResolvedDraft, architecture: str, *, aux_layer_ids: list[int] | None = None,
                  dtype: str | None = None, export_dir: str | None = None, cache_dir: Path | None = None,
                  remember: bool = True) -> ExportPlace:
    """Where the export of this draft goes, and whether an intact one is already there.

    Reads the sources' digests (remembered by stat in the cache; ``remember=False`` writes no memo)
    and what is at the destination. An earlier export is reusable only while every file still
    matches the manifest written with it (its stat, else its digest).

    Raises:
        CheckpointError: ``export_dir`` holds something that is not this export.
    """
    cache_dir = cache_dir or default_cache_dir()
    final, key = planned_export_dir(resolved, architecture, aux_layer_ids, export_dir, cache_dir,
                                    remember=remember, dtype=dtype)
    return _place(final, key, bool(export_dir), cache_dir)


def _place(final: Path, key: str, explicit: bool, cache_dir: Path, notes: list[str] | None = None) -> ExportPlace:
    found = _inspect(final, key, cache_dir / "digests", explicit)
    config = read_json(final / "config.json") if found.manifest is not None else None
    return ExportPlace(path=final, key=key, explicit=explicit, cache_dir=cache_dir, found=found, config=config,
                       notes=list(notes or []))


@contextmanager
def hold_export(place: ExportPlace, *, dry_run: bool = False) -> Iterator[ExportPlace]:
    """Take turns with other writers of this export; yields the place as it is once it is our turn.

    Nothing is held when the export is reusable (or in a dry run). Otherwise the export's lock is
    held for the ``with`` block, what killed writers left is removed, and the destination is looked
    at again: a job that waited usually finds the export another one just wrote, and reuses it.

    Raises:
        ExportWriteError: the lock cannot be created.
    """
    if dry_run or (place.reusable and not dead_temp_dirs(place.path.parent)):
        yield place
        return
    lock_path, lock_note = _lock_path(place.path, place.cache_dir, place.explicit)
    with _export_lock(lock_path, place.explicit):
        cleaned = _remove_dead_temp_dirs(place.path.parent)
        again = _place(place.path, place.key, place.explicit, place.cache_dir, cleaned)
        if not again.reusable and lock_note:
            again.notes.insert(0, lock_note)
        yield again


def plan_export(place: ExportPlace, resolved: ResolvedDraft, architecture: str, sources: DraftSources | None, *,
                aux_layer_ids: list[int] | None = None, serving_dtype: tuple[str, str] | None = None) -> ExportPlan:
    """What the export holds: the reused export's, or the draft planned from ``sources`` (pure).

    Args:
        place: from ``locate_export`` (or ``hold_export``).
        resolved: the local draft.
        architecture: the SGLang class to export for (from the algorithm).
        sources: what the draft holds (``read_draft_sources``); ``None`` when ``place`` is reusable.
        aux_layer_ids: target layers the draft was trained on, overriding what the checkpoint says.
        serving_dtype: ``(dtype, why)``: the dtype the target is served in; the draft is exported in it.

    Raises:
        CheckpointError: the draft cannot be served as trained (SGLang's loader would skip, leave
            random or mis-shape part of it).
    """
    where = str(resolved.model_dir)
    if place.reusable:
        return ExportPlan(place=place, source=where, config=place.config, manifest=place.found.manifest)
    draft = plan_draft(resolved, architecture, sources, aux_layer_ids=aux_layer_ids, dtype=serving_dtype)
    manifest = {
        "key": place.key, "format": EXPORT_FORMAT, "architecture": architecture, "source": where,
        "meta": str(resolved.meta_path) if resolved.meta_path else None, "notes": draft.notes,
        "min_sglang": draft.min_sglang, "token_map": draft.token_map is not None,
    }
    return ExportPlan(place=place, source=where, config=draft.config, draft=draft, manifest=manifest)


def check_export(plan: ExportPlan, target_config: dict | None) -> list[str]:
    """The planned export against the target, before anything is written; warnings to show.

    Raises:
        CheckpointError: listing each mismatch that cannot serve.
    """
    if target_config is None:
        return []
    return check_against_target(plan.config, target_config, plan.source)


def write_export(plan: ExportPlan, *, dry_run: bool = False) -> ExportResult:
    """Write the planned export atomically (temporary directory, fsync, rename), or reuse the one there.

    Call it inside ``hold_export``. With ``dry_run`` nothing is written: the result says where the
    export would be, and notes what a real run could not write.

    Raises:
        ExportWriteError: the export cannot be written there (read-only, full disk, a file in the way).
    """
    place, draft = plan.place, plan.draft
    if draft is None:
        return _result(place, reused=True)
    problem = place.found.problem
    rebuilt = f"{'would be rebuilt' if dry_run else 'rebuilt'}: {problem}"
    notes = ([rebuilt] if problem else []) + draft.notes
    if dry_run:
        notes += _unwritable_notes(place.path, place.cache_dir, place.explicit)
    else:
        _write_atomically(place.path, draft, plan.manifest, place.explicit, replace=problem is not None)
    return ExportResult(path=place.path, token_map=place.path / TOKEN_MAP if draft.token_map is not None else None,
                        notes=notes + place.notes, min_sglang=draft.min_sglang, config=plan.config, key=place.key)


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
        CheckpointError: an explicit ``draft.export_dir`` holds something that is not this export, or
            an export to rebuild sits beside files it did not write (never deleted: they may be the
            user's own).
    """
    if not os.path.lexists(final):
        return _Found()
    if not final.is_dir() or final.is_symlink():
        if explicit:
            raise _not_ours(final)
        raise CheckpointError(f"{final} in the export cache is a file or a link, not an export this project wrote "
                              "(it writes directories); it is never deleted. Move it away, or set cache_dir=DIR.")
    entries = {p.name for p in final.iterdir()}
    if not entries:  # an empty directory the user created for us
        return _Found()
    manifest, why = load_manifest(final, MANIFEST)
    if manifest is None:
        if explicit and (MANIFEST not in entries or not entries <= EXPORT_FILES):
            raise _not_ours(final)
        return _rebuild(final, entries, f"its manifest {MANIFEST} {why}", explicit)
    if manifest.get("key") != key:
        if explicit:
            raise CheckpointError(
                f"draft.export_dir={final} holds an export of a different draft or options (key "
                f"{manifest.get('key')} != {key}). Choose an empty directory or delete it."
            )
        return _rebuild(final, entries, f"its manifest names another export (key {manifest.get('key')}, expected "
                        f"{key})", explicit, manifest)
    damage = sealed_damage(final, manifest, memo_dir)
    return _rebuild(final, entries, damage, explicit, manifest) if damage else _Found(manifest=manifest)


def _rebuild(final: Path, entries: set[str], problem: str, explicit: bool, manifest: dict | None = None) -> _Found:
    """An export to rebuild, unless its directory also holds files the export did not write.

    A rebuild replaces the whole directory (atomically, by a rename), so anything else in it would be
    deleted with the old export: a README, notes or a tokenizer the user put beside it.

    Raises:
        CheckpointError: naming those files, and what to do.
    """
    written = set(EXPORT_FILES) | set((manifest or {}).get("files") or {})
    foreign = sorted(entries - written)
    if foreign:
        where = f"draft.export_dir={final}" if explicit else f"the export cache's {final}"
        shown = ", ".join(foreign[:8]) + (f", ... ({len(foreign) - 8} more)" if len(foreign) > 8 else "")
        raise CheckpointError(
            f"{where} holds an export to rebuild ({problem}) and also {len(foreign)} file(s) this project did not "
            f"write: {shown}. Rebuilding replaces the export's directory, which would delete them, so nothing was "
            f"touched. Move them out of {final} and run again"
            + (", or choose another draft.export_dir." if explicit else ".")
        )
    return _Found(problem=problem)


def _not_ours(final: Path) -> CheckpointError:
    return CheckpointError(
        f"draft.export_dir={final} exists and is not an export of this project (it holds no manifest "
        f"{MANIFEST} of ours, or files an export does not write); refusing to write into it, since that would "
        "replace what it holds. Choose an empty or new directory, or move its files away."
    )


# --- writing ----------------------------------------------------------------------------------------


def _lock_path(final: Path, cache_dir: Path, explicit: bool) -> tuple[Path, str | None]:
    """The lock that serializes writers of ``final``, and a note when it cannot be in the cache.

    Keyed by the destination, so jobs writing one explicit export_dir serialize too. An explicit
    ``draft.export_dir`` works with a read-only cache: its lock then lives beside it.
    """
    name = hashlib.blake2b(os.fsencode(final), digest_size=10).hexdigest()
    in_cache = cache_dir / "locks" / f"{name}.lock"
    why = directory_problem(in_cache.parent) if explicit else None
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
        raise file_system_error(exc, lock_path.parent, explicit) from exc
    with stack:
        yield


def _write_atomically(final: Path, plan, manifest: dict, explicit: bool, *, replace: bool = False) -> None:
    """Write the export as a sealed directory (``sealed_dir``: temporary directory, fsync, rename).

    ``replace``: ``final`` holds a damaged export, discarded just before the rename.
    """
    torch = import_torch()  # before safetensors.torch, which imports it: with signals held
    try:
        from safetensors.torch import save_file
    except ImportError as exc:
        raise MissingDependencyError("safetensors", SAFETENSORS_INSTALL_HINT, "export the draft") from exc

    def fill(tmp: Path) -> None:
        save_file(plan.tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_json_atomically(tmp / "config.json", plan.config, sort_keys=True)
        if plan.token_map is not None:
            torch.save(plan.token_map, tmp / TOKEN_MAP)

    try:
        write_sealed_dir(final, fill, manifest_name=MANIFEST, manifest=manifest,
                         discard_old=_discard if replace else None)
    except BaseException as exc:
        if _is_os_error(exc):
            raise file_system_error(exc, final.parent, explicit, draft=plan) from exc
        raise


def _discard(path: Path) -> None:
    """Remove a damaged export; only a directory of export files (``_inspect`` refused anything
    else; checked again here, the moment before, in case a file was put there meanwhile)."""
    if not discard_dir(path, EXPORT_FILES):
        raise CheckpointError(f"{path} changed while the export was written (it now holds files this project did "
                              "not write); nothing was deleted. Move them away and run again.")


def _is_os_error(exc: BaseException) -> bool:
    """An OSError, or safetensors' own error wrapping one (it reports "os error N")."""
    return isinstance(exc, OSError) or (type(exc).__name__ == "SafetensorError" and "os error" in str(exc))


def _is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in str(exc) \
        or "No space left" in str(exc)


def file_system_error(exc: BaseException, where: Path, explicit: bool, *, draft: DraftPlan | None = None,
                      writing: tuple[Path, ...] = ()) -> SpecError:
    """The message for a file system refusal while exporting: which file or directory, why, what to do.

    The one owner of the "no space left" / "cannot write" / "cannot read" messages of an export.

    Args:
        exc: the ``OSError`` (or safetensors' error wrapping one).
        where: the directory the export was being written under, named in the message.
        explicit: the export goes to ``draft.export_dir`` (the fix is another one) rather than the cache.
        draft: what was being written, for the space it needs.
        writing: every directory the export writes under (default: ``where``); a failing file
            elsewhere was being read, not written.
    """
    fix = ("choose another draft.export_dir" if explicit
           else "set cache_dir=DIR (or $AUTOMODEL_SPEC_CACHE) to another directory, or draft.export_dir=DIR")
    if _is_disk_full(exc):
        need = sum(t.numel() * t.element_size() for t in draft.tensors.values()) if draft is not None else 0
        size = f" (the export needs about {need / 1e6:.0f} MB)" if need else ""
        return ExportWriteError(f"no space left on the device holding {where} while writing the export{size}: "
                                f"free space there, or {fix} on a disk with room.")
    reason = getattr(exc, "strerror", None) or str(exc)
    name = getattr(exc, "filename", None)
    if name and not any(_inside(Path(name), root) for root in (writing or (where,))):
        return CheckpointError(f"cannot read {name}: {reason}. Make it readable by this user (and every directory "
                               "above it), or copy the checkpoint somewhere that is.")
    return ExportWriteError(f"cannot write the export under {where}: {reason}. Make it writable, or {fix}.")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def _unwritable_notes(final: Path, cache_dir: Path, explicit: bool) -> list[str]:
    """print_only: what a real run could not write (a note each, not a failure)."""
    why = directory_problem(final.parent)
    if why is not None:
        where = "draft.export_dir" if explicit else "the export cache"
        fix = "choose another draft.export_dir" if explicit else "set cache_dir=DIR or draft.export_dir=DIR"
        return [f"{where} cannot be written ({why}): a real run would fail here; {fix}"]
    if explicit:
        return [n for n in (_lock_path(final, cache_dir, explicit)[1],) if n]
    return []


# --- leftovers of interrupted exports ---------------------------------------------------------------


def _remove_dead_temp_dirs(parent: Path) -> list[str]:
    """Remove what killed exports left in ``parent``; a note naming them (empty if none)."""
    removed = remove_dead_temp_dirs(parent)
    if not removed:
        return []
    return [f"removed {len(removed)} unfinished export(s) left by interrupted runs in {parent}: "
            + ", ".join(removed)]


def _result(place: ExportPlace, reused: bool) -> ExportResult:
    d, manifest = place.path, place.found.manifest
    return ExportResult(
        path=d, token_map=d / TOKEN_MAP if manifest.get("token_map") else None, reused=reused,
        notes=list(manifest.get("notes", [])) + place.notes, min_sglang=manifest.get("min_sglang", OLDEST_RELEASE),
        config=place.config, key=place.key,
    )
