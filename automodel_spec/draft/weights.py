"""Read draft weights and EAGLE metadata from disk, safely."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

from automodel_spec.draft import specforge_checkpoint
from automodel_spec.draft.resolve import LEGACY_WEIGHTS, ResolvedDraft
from automodel_spec.errors import SAFETENSORS_INSTALL_HINT, CheckpointError, MissingDependencyError
from automodel_spec.io.torch_import import import_native_modules, import_torch

log = logging.getLogger(__name__)


def load_draft_weights(resolved: ResolvedDraft, allow_unsafe_pickle: bool = False) -> dict:
    """All tensors of a local draft, by name, from the files the resolver found.

    Args:
        resolved: the draft, from ``resolve.resolve_draft`` (``kind`` ``hf``, ``legacy`` or ``specforge``).
        allow_unsafe_pickle: permit ``torch.load(weights_only=False)`` for a legacy file that the
            safe loader refuses. Off by default: unpickling can run arbitrary code.
    """
    if resolved.kind == "legacy":
        return _load_torch_state_dict(resolved.model_dir / LEGACY_WEIGHTS, allow_unsafe_pickle)
    if resolved.kind == "specforge":
        return specforge_checkpoint.load_weights(resolved.model_dir)
    return load_safetensors(resolved.weight_files)


def load_safetensors(files: tuple[Path, ...] | list[Path]) -> dict:
    """All tensors of the safetensors ``files`` (one checkpoint's shards), by name.

    Raises:
        CheckpointError: a file is damaged, or two shards hold the same tensor.
        MissingDependencyError: safetensors is not installed.
    """
    import_native_modules()  # safetensors.torch imports torch: with signals held
    try:
        from safetensors.torch import load, load_file
    except ImportError as exc:
        raise MissingDependencyError("safetensors", SAFETENSORS_INSTALL_HINT, "read the draft") from exc
    tensors: dict = {}
    for f in files:
        try:  # safetensors opens UTF-8 paths only: a path of other bytes is read here and parsed from memory
            part = load_file(str(f)) if _utf8(f) else load(Path(f).read_bytes())
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"cannot read {f}: {exc}. The file is damaged or not safetensors.") from exc
        dup = tensors.keys() & part.keys()
        if dup:
            raise CheckpointError(f"{f} repeats tensor(s) from another shard: {sorted(dup)[:5]}")
        tensors.update(part)
    return tensors


def _utf8(path: Path) -> bool:
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _load_torch_state_dict(path: Path, allow_unsafe_pickle: bool) -> dict:
    torch = import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        if not allow_unsafe_pickle:
            raise CheckpointError(
                f"{path} cannot be loaded with torch.load(weights_only=True): {_first_line(exc)}. "
                "It holds Python objects besides tensors. If you trust the file, re-run with "
                "draft.allow_unsafe_pickle=true (unpickling can run arbitrary code), or re-save it as "
                "a plain state dict."
            ) from exc
        log.warning("WARNING: loading %s with weights_only=False because draft.allow_unsafe_pickle=true", path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise CheckpointError(_damaged(path, exc2)) from exc2
    except Exception as exc:  # EOFError, IndexError, ...: truncated or not a torch.save file at all
        raise CheckpointError(_damaged(path, exc)) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} is not a state dict (a mapping of names to tensors); got {type(obj).__name__}. "
            "Save it with torch.save(model.state_dict(), path)."
        )
    return dict(obj)


def load_eagle_meta(path: Path | None) -> dict | None:
    """``eagle_meta.pt`` as a dict (safe unpickling only), or ``None`` when there is none."""
    if path is None:
        return None
    torch = import_torch()
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {path} with torch.load(weights_only=True): {_first_line(exc)}. "
            "Re-save it as a dict of tensors and numbers, or move it aside to serve without its checks."
        ) from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} should hold a dict, got {type(meta).__name__}.")
    return meta


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (some, e.g. EOFError, have none)."""
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def _damaged(path: Path, exc: BaseException) -> str:
    return f"cannot read {path}: {_first_line(exc)}. The file is damaged or not a torch.save file."
