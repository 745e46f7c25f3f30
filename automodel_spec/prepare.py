"""From a validated config to what the server needs: target path, servable draft, and checks passed.

This is the data's way through the library: validate -> resolve the draft -> check it -> export it
-> check it against the target. The recipes call ``prepare_run`` and then build the command.
"""

from __future__ import annotations

import errno
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from automodel_spec.command import DraftArgs
from automodel_spec.config import DEMO_DRAFT, DEMO_TARGET, ServeConfig, target_path, validate
from automodel_spec.demo import demo_pair, ensure_demo_pair
from automodel_spec.errors import SGLANG_INSTALL_HINT, CheckpointError, MissingDependencyError
from automodel_spec.export import ExportResult, default_cache_dir, export_draft
from automodel_spec.preflight import read_target_config
from automodel_spec.resolve import looks_like_local_path, resolve_draft
from automodel_spec.serving_dtype import choose_serving_dtype


@dataclass
class PreparedRun:
    """Everything resolved for one server.

    Attributes:
        target: ``--model-path``; ``None`` when a draft is exported without a target.
        draft: the draft arguments, ``None`` without speculation.
        export: the export, for a local draft.
        notes: what was resolved, changed or assumed, in order.
        pending: something ``print_only`` could not know without writing (e.g. the demo pair
            is not built yet).
    """

    target: str | None
    draft: DraftArgs | None = None
    export: ExportResult | None = None
    notes: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def prepare_run(cfg: ServeConfig, *, dry_run: bool = False, need_target: bool = True) -> PreparedRun:
    """Validate ``cfg``, resolve and export the draft, and check it against the target.

    Args:
        cfg: the composed configuration.
        dry_run: read and check everything, write nothing (``print_only``).
        need_target: serving needs a target; an export (``False``) checks the draft against the
            target only when one is given.

    Raises:
        ConfigError: the configuration breaks a rule (all problems listed).
        CheckpointError: the draft cannot be found or served faithfully.
    """
    validate(cfg, need_target=need_target)
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    arch = cfg.algorithm.architecture
    notes: list[str] = []
    pending: list[str] = []
    target, draft_path = target_path(cfg), cfg.draft.path
    if target == DEMO_TARGET:  # the demo draft comes with the demo target only (validate)
        pair = demo_pair(cache_dir, arch)
        if dry_run and not pair.exists():
            pending.append(f"the built-in demo pair would be built under {pair.target.parent}; "
                           "the draft's export path is known once it exists")
            draft = DraftArgs(path=f"<export of {pair.draft_run}>") if cfg.algorithm.needs_draft else None
            return PreparedRun(target=str(pair.target), draft=draft, notes=notes, pending=pending)
        if not dry_run:
            ensure_demo_pair(cache_dir, arch)
        notes.append(f"built-in demo pair: target {pair.target}, draft {pair.draft_run}")
        target = str(pair.target)
        draft_path = str(pair.draft_run) if draft_path == DEMO_DRAFT else draft_path
    if target is not None:
        _check_target_path(target)
        target = _expand_user(target)  # SGLang gets the path as is: no shell expands '~' on the way
    run = PreparedRun(target=target, notes=notes, pending=pending)
    if cfg.algorithm.name is None or not cfg.algorithm.needs_draft:
        return run
    resolved = resolve_draft(draft_path, cfg.draft.revision, cfg.draft.config)
    notes.extend(resolved.notes)
    if not resolved.is_local:
        notes.append("hub drafts are passed through unchecked; download it and point draft.path at the "
                     "directory to have it checked and exported")
        run.draft = DraftArgs(path=resolved.hub_id, revision=resolved.revision)
        return run
    notes.append(f"draft: {resolved.kind} files in {resolved.model_dir}"
                 + (f", meta {resolved.meta_path.name}" if resolved.meta_path else ", no eagle_meta.pt"))
    target_config = read_target_config(target)
    try:
        export = export_draft(resolved, arch, aux_layer_ids=cfg.draft.aux_layer_ids,
                              allow_unsafe_pickle=cfg.draft.allow_unsafe_pickle, export_dir=cfg.draft.export_dir,
                              cache_dir=cache_dir, dry_run=dry_run, target_config=target_config,
                              serving_dtype=choose_serving_dtype(cfg.sglang.dtype, target_config))
    except OSError as exc:  # a file system refusal is the user's to fix, not a bug: say which file
        raise CheckpointError(os_error_message(exc, cache_dir, cfg.draft.export_dir)) from exc
    if target_config is not None:
        notes.append(f"draft checked against the target's config.json ({target})")
    elif target is None:
        notes.append("no target.path given: draft/target compatibility not checked")
    else:
        notes.append(f"target {target} is not a local directory: draft/target compatibility not checked")
    run.export = export
    run.draft = DraftArgs(path=str(export.path), token_map=str(export.token_map) if export.token_map else None)
    return run


def os_error_message(exc: OSError, cache_dir: Path, export_dir: str | None = None) -> str:
    """What failed on the file system while exporting, and what to do, for an ``OSError``.

    A file under the cache (or beside ``draft.export_dir``) was being written; any other was being read.
    """
    name = Path(exc.filename) if exc.filename else None
    why = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return (f"no space left on the device holding {name or cache_dir}; free some, or set cache_dir=DIR "
                "(or draft.export_dir=DIR) on another disk.")
    write_roots = [cache_dir] + ([Path(export_dir).expanduser().parent] if export_dir else [])
    if name is not None and not any(_inside(name, root) for root in write_roots):
        return (f"cannot read {name}: {why}. Make it readable by this user (and every directory above it), "
                "or copy the checkpoint somewhere that is.")
    return (f"cannot write the export to {name or cache_dir}: {why}. Set cache_dir=DIR (or $AUTOMODEL_SPEC_CACHE) "
            "to a directory this user can write, or draft.export_dir=DIR.")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def _check_target_path(target: str) -> None:
    path = Path(target).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"target.path={target} has no config.json; point it at the model's HF directory.")
        return
    if looks_like_local_path(target):
        raise CheckpointError(
            f"target.path={target} does not exist. It looks like a local path, so it is not taken as a hub id; "
            "check the spelling, or give a hub id as org/name."
        )


def _expand_user(path: str) -> str:
    """``path`` with a leading ``~`` / ``~user`` expanded (hub ids and other paths are unchanged)."""
    return str(Path(path).expanduser()) if path.startswith("~") else path


def check_sglang_installed(python: str | None, min_version: str, needs: str = "this draft needs") -> None:
    """Before launching with this interpreter: SGLang must be importable and new enough.

    Raises:
        MissingDependencyError: SGLang is not installed (exit code 2).
        CheckpointError: the installed SGLang is older than the draft needs.
    """
    if python:  # another interpreter: it will say so itself if SGLang is missing
        return
    if importlib.util.find_spec("sglang") is None:
        raise MissingDependencyError("sglang", SGLANG_INSTALL_HINT, "launch the server")
    try:
        installed = importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        return
    if Version(installed) < Version(min_version):
        raise CheckpointError(
            f"{needs} SGLang >= {min_version}, but {installed} is installed: older releases would "
            f"{'skip or mis-shape part of it' if needs == 'this draft needs' else 'refuse it or ignore it'}. "
            f"Upgrade: pip install 'sglang>={min_version}'."
        )
