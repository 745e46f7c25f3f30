"""Exporter: write a draft as SGLang loads it, beside (never over) the user's checkpoint.

Exports go to a directory keyed by the content of the source files and the export options, so a
second run (or a second sweep job) reuses the first one's result. Writes are atomic (temporary
directory + rename) and serialized by a file lock, so concurrent jobs never see half a directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from automodel_spec.checkpoint import LEGACY_WEIGHTS, SAFETENSORS_INDEX, ResolvedDraft, weight_files
from automodel_spec.errors import SAFETENSORS_INSTALL_HINT, CheckpointError, MissingDependencyError
from automodel_spec.file_digest import file_digest
from automodel_spec.file_lock import file_lock
from automodel_spec.preflight import check_against_target, plan_draft, read_json
from automodel_spec.specforge_checkpoint import TRAINING_STATE
from automodel_spec.weights import load_draft_weights, load_eagle_meta

EXPORT_FORMAT = 2  # 2: rope stated in both forms, the serving dtype
MANIFEST = "automodel_spec_export.json"
TOKEN_MAP = "token_map.pt"


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
    """Check a local draft and write its servable export (or find an identical earlier one).

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
    """
    cache_dir = cache_dir or default_cache_dir()
    dtype = serving_dtype[0] if serving_dtype else None
    final, key = planned_export_dir(resolved, architecture, aux_layer_ids, export_dir, cache_dir,
                                    remember=not dry_run, dtype=dtype)
    done = _read_manifest(final)
    if done is not None:
        if done.get("key") != key:
            raise CheckpointError(
                f"draft.export_dir={final} holds an export of a different draft or options (key "
                f"{done.get('key')} != {key}). Choose an empty directory or delete it."
            )
        return _checked(_result(final, done, reused=True), target_config, resolved)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise CheckpointError(
            f"draft.export_dir={final} exists and is not an export of this project; refusing to write into "
            "it. Choose an empty or new directory."
        )
    if dry_run:
        plan = _plan(resolved, architecture, aux_layer_ids, allow_unsafe_pickle, serving_dtype)
        result = ExportResult(path=final, token_map=final / TOKEN_MAP if plan.token_map is not None else None,
                              written=True, notes=plan.notes, min_sglang=plan.min_sglang, config=plan.config)
        return _checked(result, target_config, resolved)
    # keyed by the destination, so jobs writing one explicit export_dir serialize too
    lock_name = hashlib.blake2b(str(final).encode(), digest_size=10).hexdigest()
    with file_lock(cache_dir / "locks" / f"{lock_name}.lock"):
        done = _read_manifest(final)  # another job may have finished it while we waited
        if done is not None and done.get("key") == key:
            return _checked(_result(final, done, reused=True), target_config, resolved)
        plan = _plan(resolved, architecture, aux_layer_ids, allow_unsafe_pickle, serving_dtype)
        warnings = _target_warnings(plan.config, target_config, resolved)  # refuses before anything is written
        manifest = {
            "key": key, "format": EXPORT_FORMAT, "architecture": architecture,
            "source": str(resolved.model_dir), "meta": str(resolved.meta_path) if resolved.meta_path else None,
            "notes": plan.notes, "min_sglang": plan.min_sglang, "token_map": plan.token_map is not None,
        }
        _write_atomically(final, plan, manifest)
        result = _result(final, manifest, reused=False)
        result.notes.extend(warnings)
        return result


def _plan(resolved, architecture, aux_layer_ids, allow_unsafe_pickle, serving_dtype):
    config = read_json(resolved.config_file)
    tensors = load_draft_weights(resolved.model_dir, resolved.kind, allow_unsafe_pickle)
    meta = load_eagle_meta(resolved.meta_path)
    return plan_draft(resolved, architecture, config, tensors, meta, aux_layer_ids=aux_layer_ids,
                      dtype=serving_dtype)


def _target_warnings(config: dict, target_config: dict | None, resolved: ResolvedDraft) -> list[str]:
    if target_config is None:
        return []
    return check_against_target(config, target_config, str(resolved.model_dir))


def _checked(result: ExportResult, target_config: dict | None, resolved: ResolvedDraft) -> ExportResult:
    result.notes.extend(_target_warnings(result.config, target_config, resolved))
    return result


def _write_atomically(final: Path, plan, manifest: dict) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError as exc:
        raise MissingDependencyError("safetensors", SAFETENSORS_INSTALL_HINT, "export the draft") from exc
    import torch

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        save_file(plan.tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(plan.config, indent=2, sort_keys=True) + "\n")
        if plan.token_map is not None:
            torch.save(plan.token_map, tmp / TOKEN_MAP)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks it complete
        for f in tmp.iterdir():  # readable by a server running as another user; on disk before the rename
            os.chmod(f, 0o644)
            _fsync(f)
        os.chmod(tmp, 0o755)
        _fsync(tmp)
        if final.exists():  # an empty directory the user created for us
            final.rmdir()
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_manifest(d: Path) -> dict | None:
    try:
        return json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _result(d: Path, manifest: dict, reused: bool) -> ExportResult:
    return ExportResult(
        path=d, token_map=d / TOKEN_MAP if manifest.get("token_map") else None, reused=reused,
        written=not reused, notes=list(manifest.get("notes", [])), min_sglang=manifest.get("min_sglang", "0.5.9"),
        config=read_json(d / "config.json"),
    )
