"""Resolver: find the servable Hugging Face directory inside whatever ``draft.path`` names.

Accepted: an Automodel run directory (``LATEST`` is followed), an ``epoch_E_step_S/`` directory, its
``model/`` or ``model/consolidated/``, a legacy directory with ``draft_model.pt`` + ``config.json``, a
plain HF directory (``config.json`` + safetensors), or a hub id ``org/name`` passed through untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from automodel_spec.draft import specforge_checkpoint
from automodel_spec.errors import CheckpointError
from automodel_spec.io.json_file import read_json_value
from automodel_spec.io.path_lookup import missing_reason

META_NAMES = ("eagle_meta.pt", "eagle3_meta.pt")
LEGACY_WEIGHTS = "draft_model.pt"
SAFETENSORS_INDEX = "model.safetensors.index.json"
INCOMPLETE_MARKER = ".incomplete"  # Automodel's mark on a checkpoint whose save has not finished
_STEP_DIR = re.compile(r"^epoch_(\d+)_step_(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ResolvedDraft:
    """Where the drafter's files are.

    Attributes:
        kind: ``hub``, ``hf`` (config.json + safetensors), ``legacy`` (draft_model.pt) or ``specforge``
            (SpecForge's training_state.pt, with its config elsewhere).
        hub_id: the id, for ``kind == "hub"``.
        revision: hub revision, passed through.
        model_dir: the directory holding ``config.json`` and the weights.
        checkpoint_dir: the ``epoch_E_step_S`` directory, when the layout has one.
        meta_path: ``eagle_meta.pt`` (or ``eagle3_meta.pt``) when found.
        notes: what the resolver chose and why, for the user.
        config_path: the draft's config when it is not ``model_dir/config.json``.
        weight_files: the safetensors files (``kind == "hf"``), from the index read once here.
        source_files: every file whose content decides the export (config, weights, index, meta,
            the recipe beside the checkpoint), listed once here; empty for a hub id.
    """

    kind: str
    hub_id: str | None = None
    revision: str | None = None
    model_dir: Path | None = None
    checkpoint_dir: Path | None = None
    meta_path: Path | None = None
    notes: tuple[str, ...] = ()
    config_path: Path | None = None
    weight_files: tuple[Path, ...] = ()
    source_files: tuple[Path, ...] = ()

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"

    @property
    def config_file(self) -> Path:
        return self.config_path or self.model_dir / "config.json"


def looks_like_local_path(value: str) -> bool:
    """A string the user meant as a path: starts with / . ~, or has more than one '/'."""
    return value.startswith(("/", ".", "~")) or value.count("/") > 1


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of an HF directory: the index's shards, else ``model.safetensors``.

    Returns an empty list when there are none.

    Raises:
        CheckpointError: the index is damaged, names a shard outside ``model_dir``, or one that is missing.
    """
    index = model_dir / SAFETENSORS_INDEX
    if index.is_file():
        shards = sorted(set(_index_weight_map(index).values()))
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise CheckpointError(
                f"{index} names shard(s) that are not there: {', '.join(missing)}. "
                "Copy the complete checkpoint, or re-consolidate it."
            )
        return [model_dir / s for s in shards]
    single = model_dir / "model.safetensors"
    return [single] if single.is_file() else []


def _index_weight_map(index: Path) -> dict[str, str]:
    """An index's ``weight_map`` (tensor name -> shard file name), checked to be one."""
    doc = read_json_value(index, remedy="Copy it again from the checkpoint, or re-consolidate the checkpoint.")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise CheckpointError(
            f"{index} is not a safetensors index: it must be a JSON object whose 'weight_map' maps tensor names "
            f"to shard file names (got {_describe_json(doc if weight_map is None else weight_map)}). "
            "Copy it again from the checkpoint, or re-consolidate the checkpoint."
        )
    # a shard is a file beside the index: a name with a directory in it would read files elsewhere
    outside = sorted({v for v in weight_map.values() if Path(v).name != v or v in (".", "..")})
    if outside:
        raise CheckpointError(f"{index} names shard(s) outside its directory: {', '.join(outside[:5])}. "
                              "Shards are files beside the index; fix the index or re-consolidate the checkpoint.")
    return weight_map


def _describe_json(value) -> str:
    kind = {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)
    return f"{kind} {str(value)[:60]!r}" if not isinstance(value, dict) else kind + " of other values"


def resolve_draft(path: str, revision: str | None = None, config: str | None = None) -> ResolvedDraft:
    """Resolve ``draft.path`` to the files to serve.

    ``config`` (``draft.config``) names the draft's config for checkpoints that keep it elsewhere
    (SpecForge's training checkpoints).

    Raises:
        CheckpointError: a local-looking path that does not exist, or a directory with no servable
            layout (the message lists what was looked for and what was found).
    """
    expanded = Path(path).expanduser()
    if not _exists(expanded, "draft.path"):
        reason = missing_reason(expanded)
        if reason.startswith("is a"):  # a link loop, a broken link: the cause is not the spelling
            raise CheckpointError(f"draft.path={path} {reason}.")
        if looks_like_local_path(path) or not _HUB_ID.match(path):
            raise CheckpointError(
                f"draft.path={path} does not exist. It looks like a local path, so it is not taken "
                "as a hub id; check the spelling, or give a hub id as org/name."
            )
        return ResolvedDraft(kind="hub", hub_id=path, revision=revision,
                             notes=(f"{path} is not a local path: passed to SGLang as a hub id",))
    if expanded.is_file():
        expanded = expanded.parent
    notes: list[str] = []
    resolved = _resolve_dir(expanded.resolve(), notes)
    if resolved.kind == "specforge":
        config_path = specforge_checkpoint.draft_config_path(resolved.model_dir, config, notes)
        resolved = replace(resolved, config_path=config_path, notes=tuple(notes))
    elif config:
        raise CheckpointError(
            f"draft.config={config} is for checkpoints without a config.json (SpecForge training checkpoints); "
            f"{resolved.model_dir} has its own config.json. Unset draft.config."
        )
    return replace(resolved, source_files=_source_files(resolved))


def _source_files(resolved: ResolvedDraft) -> tuple[Path, ...]:
    """Every file whose content decides the export of a local draft (its config known: ``config_file``)."""
    d = resolved.model_dir
    files = [resolved.config_file]
    if resolved.kind == "legacy":
        files.append(d / LEGACY_WEIGHTS)
    elif resolved.kind == "specforge":
        files.append(d / specforge_checkpoint.TRAINING_STATE)
    else:
        files += resolved.weight_files
        if (d / SAFETENSORS_INDEX).is_file():
            files.append(d / SAFETENSORS_INDEX)
    if resolved.meta_path:
        files.append(resolved.meta_path)
    if resolved.checkpoint_dir and (resolved.checkpoint_dir / "config.yaml").is_file():
        files.append(resolved.checkpoint_dir / "config.yaml")
    return tuple(files)


def _exists(path: Path, key: str) -> bool:
    """``path.exists()``, with the errors it raises itself (too long, no permission) as a message."""
    try:
        return path.exists()
    except OSError as exc:
        raise CheckpointError(f"{key}={path}: cannot look it up ({exc.strerror}). Check the path and that this "
                              "user may enter every directory on it.") from exc


def _resolve_dir(d: Path, notes: list[str]) -> ResolvedDraft:
    if specforge_checkpoint.is_step_dir(d):
        return ResolvedDraft(kind="specforge", model_dir=d, notes=tuple(notes))
    if _STEP_DIR.match(d.name) or _holds_model_dir(d):
        return _resolve_step_dir(d, notes)
    step = _latest_step(d, notes)
    if step is not None:
        return _resolve_step_dir(step, notes)
    if d.name == "model" and (_STEP_DIR.match(d.parent.name) or _has_model_files(d)):
        return _resolve_model_dir(d, d.parent, notes)
    if d.name == "consolidated" and d.parent.name == "model":
        return _resolved_hf(d, d.parent.parent, notes)
    if (d / "consolidated").is_dir():
        return _resolve_model_dir(d, None, notes)
    epoch = _speculators_epoch(d, notes)
    if epoch is not None:
        return _resolved_hf(epoch, None, notes)
    if not (d / "config.json").is_file():
        step = specforge_checkpoint.find_step_dir(d, notes)
        if step is not None:
            return ResolvedDraft(kind="specforge", model_dir=step, notes=tuple(notes))
    return _resolved_hf(d, None, notes)


def _speculators_epoch(save_dir: Path, notes: list[str]) -> Path | None:
    """In a speculators training directory (``0/``, ``1/``, ... per epoch), the one to serve.

    speculators' trainer points ``checkpoint_best`` at the epoch of lowest validation loss; without
    it, the last epoch is taken.
    """
    if (save_dir / "config.json").is_file():
        return None
    best = save_dir / "checkpoint_best"
    if (best / "config.json").is_file():
        notes.append(f"followed {best} -> {best.resolve().name} (speculators: lowest validation loss)")
        return best.resolve()
    try:
        epochs = [p for p in save_dir.iterdir() if p.name.isdigit() and (p / "config.json").is_file()]
    except OSError:
        return None
    if not epochs:
        return None
    last = max(epochs, key=lambda p: int(p.name))
    notes.append(f"{save_dir}: took the last epoch, {last.name}/ (no checkpoint_best)")
    return last


def _has_model_files(d: Path) -> bool:
    """``config.json`` in ``d`` or in ``d/consolidated``: HF files a checkpoint's ``model/`` holds."""
    return (d / "config.json").is_file() or (d / "consolidated" / "config.json").is_file()


def _holds_model_dir(d: Path) -> bool:
    """A checkpoint under any name (``final/``, ``best/``, a copy): it holds ``model/`` with HF files.

    Automodel keeps the token map in the weights (``d2t``/``t2d``), so ``eagle_meta.pt`` is not
    required to recognise one.
    """
    return (d / "model").is_dir() and _has_model_files(d / "model")


def _latest_step(run_dir: Path, notes: list[str]) -> Path | None:
    """The checkpoint a run directory points at: ``LATEST`` (or ``LATEST.txt``), else the newest.

    Automodel's recipes keep checkpoints in ``<output_dir>/checkpoints/``, so an output directory
    holding ``checkpoints/`` is followed into it. A checkpoint still marked ``.incomplete`` (a save
    that was cut off) is passed over for the newest complete one, as Automodel's own restore does.
    """
    if _pointer(run_dir) is None and not _steps(run_dir) and (run_dir / "checkpoints").is_dir():
        inner = run_dir / "checkpoints"
        if _pointer(inner) is not None or _steps(inner):
            notes.append(f"{run_dir} is a training output directory: took its checkpoints/ ({inner})")
            run_dir = inner
    pointer = _pointer(run_dir)
    if pointer is not None:
        target = _follow(pointer, run_dir)
        if not target.is_dir():
            raise CheckpointError(
                f"{pointer} points at {target}, which does not exist (an interrupted save?). "
                f"Point draft.path at one of: {_list_steps(run_dir) or 'no epoch_E_step_S dirs found'}."
            )
        if not _incomplete(target):
            notes.append(f"followed {pointer} -> {target.name}")
            return target
        notes.append(f"{pointer} points at {target.name}, which is marked {INCOMPLETE_MARKER} (a save that was "
                     "cut off)")
    steps = _steps(run_dir)
    complete = [p for p in steps if not _incomplete(p)]
    if not complete:
        if steps:
            raise CheckpointError(
                f"every checkpoint in {run_dir} is marked {INCOMPLETE_MARKER} (saves that were cut off): "
                f"{_list_steps(run_dir)}. Resume the training to finish a save, or point draft.path at one "
                "you know is whole."
            )
        return None
    notes.append(f"{run_dir}: took the newest complete checkpoint, {complete[-1].name}"
                 + ("" if pointer is not None else " (no LATEST)"))
    return complete[-1]


def _pointer(run_dir: Path) -> Path | None:
    """``LATEST`` (a symlink, or a file naming the checkpoint) or Automodel's ``LATEST.txt`` fallback."""
    for name in ("LATEST", "LATEST.txt"):
        if (run_dir / name).is_symlink() or (run_dir / name).exists():
            return run_dir / name
    return None


def _follow(pointer: Path, run_dir: Path) -> Path:
    """The checkpoint ``LATEST`` names, which must be a directory inside the run directory."""
    steps = _list_steps(run_dir) or "none found"
    if pointer.is_symlink() or pointer.is_dir():
        try:
            target = pointer.resolve(strict=False)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise CheckpointError(f"{pointer} is a symlink that cannot be followed ({exc}): a loop or a broken "
                                  f"link. Point draft.path at a checkpoint directory instead: {steps}.") from exc
    else:
        target = run_dir / _pointer_name(pointer, steps)
        try:
            target = target.resolve(strict=False)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"{pointer} names {target}, which cannot be followed ({exc}). Point "
                                  f"draft.path at a checkpoint directory instead: {steps}.") from exc
    root = run_dir.resolve()  # checkpoints/ may itself be a link
    if target != root and root in target.parents:
        return target
    raise CheckpointError(
        f"{pointer} points at {target}, outside the run directory {run_dir}: a LATEST that leaves its run "
        "belongs to another run (a copied or moved directory?). If that checkpoint is the one to serve, set "
        f"draft.path={target}; otherwise fix LATEST or point draft.path at one of: {steps}."
    )


def _pointer_name(pointer: Path, steps: str) -> str:
    """The checkpoint name a ``LATEST`` file holds (Automodel writes one name, one line)."""
    try:
        with open(pointer, "rb") as fh:
            name = fh.read(4096).decode("utf-8").strip()  # one name; a huge file is not a LATEST
    except OSError as exc:
        raise CheckpointError(f"cannot read {pointer} ({exc.strerror}); point draft.path at a checkpoint "
                              f"directory instead: {steps}.") from exc
    except UnicodeError as exc:
        raise CheckpointError(f"{pointer} does not hold a checkpoint name: its bytes are not text ({exc}); the file "
                              f"is damaged. Point draft.path at a checkpoint directory instead: {steps}.") from exc
    if not name or "\n" in name or "\0" in name or len(name) > 255:
        raise CheckpointError(f"{pointer} does not hold a checkpoint name (one line, e.g. epoch_0_step_100): got "
                              f"{name[:60]!r}. Fix it, or point draft.path at one of: {steps}.")
    return name


def _steps(run_dir: Path) -> list[Path]:
    """``epoch_E_step_S`` directories, oldest first (numerically)."""
    try:
        found = [p for p in run_dir.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    except OSError:
        return []
    return sorted(found, key=lambda p: tuple(int(x) for x in _STEP_DIR.match(p.name).groups()))


def _incomplete(step: Path) -> bool:
    return (step / INCOMPLETE_MARKER).exists()


def _list_steps(run_dir: Path) -> str:
    return ", ".join(p.name for p in _steps(run_dir))


def _resolve_step_dir(step: Path, notes: list[str]) -> ResolvedDraft:
    if _incomplete(step):
        raise CheckpointError(
            f"{step} is marked {INCOMPLETE_MARKER}: its save was cut off, so its files may be partial. "
            f"Use a complete checkpoint{': ' + others if (others := _list_steps(step.parent)) else ''}."
        )
    model = step / "model"
    if not model.is_dir():
        if (step / LEGACY_WEIGHTS).is_file() or (step / "config.json").is_file():
            return _resolved_hf(step, step, notes)
        raise CheckpointError(
            f"{step} looks like an Automodel checkpoint but has no model/ directory "
            f"(found: {_listing(step)}). Was the save interrupted? Use another checkpoint."
        )
    return _resolve_model_dir(model, step, notes)


def _resolve_model_dir(model: Path, ckpt: Path | None, notes: list[str]) -> ResolvedDraft:
    consolidated = model / "consolidated"
    if consolidated.is_dir() and (consolidated / "config.json").is_file():
        files = weight_files(consolidated)
        if files:
            if (model / "config.json").is_file() and weight_files(model):
                notes.append(f"both {model} and {consolidated} hold HF files; serving consolidated/")
            return _resolved_hf(consolidated, ckpt, notes, files)
    if (model / "config.json").is_file():
        files = weight_files(model)
        if files or (model / LEGACY_WEIGHTS).is_file():
            if consolidated.is_dir():
                notes.append(f"{consolidated} holds no complete HF checkpoint; serving the weights in {model}")
            return _resolved_hf(model, ckpt, notes, files)
    raise CheckpointError(
        f"no servable weights in {model}: looked for config.json with model.safetensors (or "
        f"{SAFETENSORS_INDEX}) in {consolidated} and in {model}. Found in model/: {_listing(model)}. "
        "Training shards alone cannot be served: save the checkpoint with consolidated HF weights "
        "(Automodel's save_consolidated) and point draft.path at it."
    )


def _resolved_hf(d: Path, ckpt: Path | None, notes: list[str], files: list[Path] | None = None) -> ResolvedDraft:
    """The draft in ``d``; ``files`` are its safetensors files when the caller has listed them already."""
    has_config = (d / "config.json").is_file()
    legacy = (d / LEGACY_WEIGHTS).is_file()
    safetensors = (weight_files(d) if files is None else files) if has_config else []
    if has_config and safetensors:
        kind = "hf"
    elif has_config and legacy:
        kind = "legacy"
    else:
        wanted = "config.json" if not has_config else f"model.safetensors, {SAFETENSORS_INDEX} or {LEGACY_WEIGHTS}"
        raise CheckpointError(
            f"{d} is not a draft checkpoint: missing {wanted} (found: {_listing(d)}). "
            "Give a run dir, an epoch_E_step_S dir, its model/ or model/consolidated/, "
            "a legacy dir with draft_model.pt + config.json, or a hub id org/name."
        )
    # Only the draft's own directory and its checkpoint: a meta file further up belongs to another run.
    meta = (_find_meta(ckpt) if ckpt else None) or _find_meta(d)
    return ResolvedDraft(kind=kind, model_dir=d, checkpoint_dir=ckpt, meta_path=meta, notes=tuple(notes),
                         weight_files=tuple(safetensors) if kind == "hf" else ())


def _find_meta(d: Path | None) -> Path | None:
    if d is None:
        return None
    for name in META_NAMES:
        if (d / name).is_file():
            return d / name
    return None


def _listing(d: Path, limit: int = 12) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in d.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
