"""From a validated config to what the server needs: the target, the servable draft, every check passed.

The draft's way through the library, in five steps, each a module of its own:

1. resolve (``resolve``): where the draft's files are, from ``draft.path``;
2. plan (``export.plan_export``, ``preflight``): what the export holds, computed (pure) from the
   sources read once (``draft_sources``), or the intact earlier export to reuse;
3. check (``preflight``, ``export.check_export``): refuse what SGLang's loader would skip, leave
   random or mis-shape, and what does not fit the target, before anything is written;
4. write (``export.write_export``): the export, atomically, in the content-keyed cache;
5. launch (``launch``): the caller turns the ``PreparedRun`` into the server's argv and process.

``prepare_run`` does steps 1 to 4 for the recipes; ``prepare_export`` is steps 2 to 4 for a local draft.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from automodel_spec.config.rules import target_path, validate
from automodel_spec.config.schema import DEMO_DRAFT, DEMO_TARGET, ServeConfig, SpecConfig
from automodel_spec.config.spec_rules import resolve_spec
from automodel_spec.demo.pair import demo_pair, ensure_demo_pair
from automodel_spec.draft.draft_sources import read_draft_sources
from automodel_spec.draft.resolve import ResolvedDraft, resolve_draft
from automodel_spec.errors import ConfigError
from automodel_spec.export.exporter import (
    ExportResult,
    check_export,
    check_outside_source,
    default_cache_dir,
    file_system_error,
    hold_export,
    locate_export,
    plan_export,
    write_export,
)
from automodel_spec.export.serving_dtype import choose_serving_dtype
from automodel_spec.export.target import check_target_path, read_target_config, target_content_key
from automodel_spec.serve.command import DraftArgs


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
        target_revision: ``target.revision``, for a hub target.
        target_content: one digest of a local target's files (``export.target.target_content_key``), for a
            benchmark's identity; ``None`` unless asked for (``identify_target``) or for a hub target.
        spec: the speculative setting the server is asked for, draft tokens derived
            (``spec_rules.resolve_spec``, computed once here); the command, the launch, the plan and the
            bench job read it.
    """

    target: str | None
    draft: DraftArgs | None = None
    export: ExportResult | None = None
    notes: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    target_revision: str | None = None
    spec: SpecConfig = field(default_factory=SpecConfig)
    target_content: str | None = None


def prepare_run(cfg: ServeConfig, *, dry_run: bool = False, need_target: bool = True,
                identify_target: bool = False) -> PreparedRun:
    """Validate ``cfg``, resolve the draft, plan, check and write its export: steps 1 to 4.

    Args:
        cfg: the composed configuration.
        dry_run: read and check everything, write nothing (``print_only``).
        need_target: serving needs a target; an export (``False``) checks the draft against the
            target only when one is given.
        identify_target: digest a local target's files (``PreparedRun.target_content``): a benchmark
            keys its results on them; serving alone does not read them.

    Raises:
        ConfigError: the configuration breaks a rule (all problems listed).
        CheckpointError: the draft cannot be found or served faithfully.
    """
    validate(cfg, need_target=need_target)
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    arch = cfg.algorithm.architecture
    run = PreparedRun(target=target_path(cfg), target_revision=cfg.target.revision, spec=resolve_spec(cfg.spec))
    draft_path = cfg.draft.path
    if run.target == DEMO_TARGET:  # the demo draft comes with the demo target only (validate)
        pair = demo_pair(cache_dir, arch)
        if dry_run and not pair.exists():
            run.pending.append(f"the built-in demo pair would be built under {pair.target.parent}; "
                               "the draft's export path is known once it exists")
            run.target = str(pair.target)
            run.draft = DraftArgs(path=f"<export of {pair.draft_run}>") if cfg.algorithm.needs_draft else None
            return run
        if not dry_run:
            ensure_demo_pair(cache_dir, arch)
        run.notes.append(f"built-in demo pair: target {pair.target}, draft {pair.draft_run}")
        run.target = str(pair.target)
        draft_path = str(pair.draft_run) if draft_path == DEMO_DRAFT else draft_path
    if run.target is not None:
        run.target = check_target_path(run.target)
        if run.target_revision and Path(run.target).expanduser().is_dir():
            check_local_revision("target", run.target_revision, cfg.target.path or run.target)
        if identify_target and not dry_run:
            run.target_content = target_content_key(run.target, cache_dir / "digests")
    if cfg.algorithm.name is None or not cfg.algorithm.needs_draft:
        return run

    # 1. resolve
    resolved = resolve_draft(draft_path, cfg.draft.revision, cfg.draft.config)
    run.notes.extend(resolved.notes)
    if not resolved.is_local:
        run.notes.append("hub drafts are passed through unchecked; download it and point draft.path at the "
                         "directory to have it checked and exported")
        run.draft = DraftArgs(path=resolved.hub_id, revision=resolved.revision)
        return run
    check_local_revision("draft", cfg.draft.revision, cfg.draft.path)
    check_outside_source(draft_path, resolved, {
        **({"draft.export_dir": Path(cfg.draft.export_dir)} if cfg.draft.export_dir else {}),
        _cache_key(cfg): cache_dir})
    run.notes.append(f"draft: {resolved.kind} files in {resolved.model_dir}"
                     + (f", meta {resolved.meta_path.name}" if resolved.meta_path else ", no eagle_meta.pt"))
    # 2.-4. plan, check, write
    target_config = read_target_config(run.target)
    run.export = prepare_export(resolved, arch, aux_layer_ids=cfg.draft.aux_layer_ids,
                                allow_unsafe_pickle=cfg.draft.allow_unsafe_pickle, export_dir=cfg.draft.export_dir,
                                cache_dir=cache_dir, dry_run=dry_run, target_config=target_config,
                                serving_dtype=choose_serving_dtype(cfg.sglang.dtype, target_config))
    if target_config is not None:
        run.notes.append(f"draft checked against the target's config.json ({run.target})")
    elif run.target is None:
        run.notes.append("no target.path given: draft/target compatibility not checked")
    else:
        run.notes.append(f"target {run.target} is not a local directory: draft/target compatibility not checked")
    token_map = str(run.export.token_map) if run.export.token_map else None
    run.draft = DraftArgs(path=str(run.export.path), token_map=token_map)
    return run


def check_local_revision(key: str, revision: str | None, path: str) -> None:
    """Refuse ``draft.revision`` / ``target.revision`` beside a local directory, which has no revisions.

    A revision picks a commit of a hub repository; a local directory is served as it is on disk, so
    the revision would be dropped without a word and the files served might not be the ones asked for.

    Raises:
        ConfigError: naming both values and what to do.
    """
    if revision:
        raise ConfigError(f"{key}.revision={revision} is set, but {key}.path={path} is a local directory, served "
                          f"as it is on disk: a revision selects a commit of a hub id only. Drop {key}.revision, or "
                          f"check that revision out into the directory (or give the hub id as {key}.path).")


def _cache_key(cfg: ServeConfig) -> str:
    """The setting that names the cache, for messages."""
    import os

    if cfg.cache_dir:
        return "cache_dir"
    return "$AUTOMODEL_SPEC_CACHE" if os.environ.get("AUTOMODEL_SPEC_CACHE") else "the default cache_dir"


def prepare_export(resolved: ResolvedDraft, architecture: str, *, aux_layer_ids: list[int] | None = None,
                   allow_unsafe_pickle: bool = False, export_dir: str | None = None, cache_dir: Path | None = None,
                   dry_run: bool = False, serving_dtype: tuple[str, str] | None = None,
                   target_config: dict | None = None) -> ExportResult:
    """Plan, check and write the servable export of a local draft (or reuse an identical, intact one).

    An earlier export is reused only when every file still matches the manifest written with it
    (its stat, else its digest); a damaged one is rebuilt and the notes say why. Writers of one
    export take turns: a job that waited finds the export the other wrote, and reuses it.

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
        CheckpointError: the draft cannot be read or served faithfully, does not fit the target, or
            ``export_dir`` holds something else.
        ExportWriteError: the export cannot be written there (read-only, full disk, a file in the way).
    """
    cache_dir = cache_dir or default_cache_dir()
    try:
        place = locate_export(resolved, architecture, aux_layer_ids=aux_layer_ids, export_dir=export_dir,
                              dtype=serving_dtype[0] if serving_dtype else None, cache_dir=cache_dir,
                              remember=not dry_run)
        with hold_export(place, dry_run=dry_run) as place:
            sources = None if place.reusable else read_draft_sources(resolved, allow_unsafe_pickle)
            plan = plan_export(place, resolved, architecture, sources, aux_layer_ids=aux_layer_ids,
                               serving_dtype=serving_dtype)
            warnings = check_export(plan, target_config)
            export = write_export(plan, dry_run=dry_run)
    except OSError as exc:  # a file system refusal is the user's to fix, not a bug: say which file
        export_parent = Path(export_dir).expanduser().parent if export_dir else None
        where = Path(exc.filename).parent if exc.filename else (export_parent or cache_dir)
        raise file_system_error(exc, where, bool(export_dir),
                                writing=(cache_dir, *([export_parent] if export_parent else []))) from exc
    export.notes.extend(warnings)
    return export
