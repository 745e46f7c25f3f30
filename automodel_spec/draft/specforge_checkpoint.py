"""SpecForge's training checkpoints: ``{run_id}-step{N}/training_state.pt`` and a ``{run_id}-latest`` link.

SpecForge 0.2.0 keeps the draft's weights inside that torch file (``draft_state_dict``, already under
SGLang's names) and its architecture in the separate ``--draft-config`` JSON the training was given,
whose path (but not content) the checkpoint records. ``specforge export --to sglang`` joins the two;
this module does the same from the checkpoint, so a run can be served without exporting it first.
"""

from __future__ import annotations

import re
from pathlib import Path

from automodel_spec.errors import CheckpointError
from automodel_spec.io.torch_import import import_torch

TRAINING_STATE = "training_state.pt"
_STEP = re.compile(r"^(?P<run>.+)-step(?P<step>\d+)$")
EXPORT_HINT = ("or export it with SpecForge first: specforge export --to sglang --checkpoint CKPT "
               "--draft-config CONFIG --output-dir OUT, and serve OUT")


def is_step_dir(d: Path) -> bool:
    return (d / TRAINING_STATE).is_file()


def find_step_dir(run_dir: Path, notes: list[str]) -> Path | None:
    """In a SpecForge output directory, the checkpoint ``{run_id}-latest`` names, else the newest step."""
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return None
    latest = [p for p in entries if p.name.endswith("-latest") and is_step_dir(p)]
    if latest:
        notes.append(f"followed {latest[0]} -> {latest[0].resolve().name} (SpecForge)")
        return latest[0].resolve()
    steps = [p for p in entries if _STEP.match(p.name) and is_step_dir(p)]
    if not steps:
        return None
    newest = max(steps, key=lambda p: int(_STEP.match(p.name).group("step")))
    notes.append(f"{run_dir}: took the newest SpecForge checkpoint, {newest.name} (no -latest link)")
    return newest


def draft_config_path(step: Path, given: str | None, notes: list[str]) -> Path:
    """The draft's config: ``draft.config`` when given, else the file the checkpoint says it trained with.

    Raises:
        CheckpointError: neither is there (the message says how to give it).
    """
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise CheckpointError(f"draft.config={given} does not exist; give the --draft-config JSON the "
                                  f"SpecForge run was trained with, {EXPORT_HINT}.")
        return path.resolve()
    recorded = _recorded_config(step)
    if recorded is not None and recorded.is_file():
        notes.append(f"draft config: {recorded}, the --draft-config this SpecForge run recorded (set "
                     "draft.config to use another)")
        return recorded
    where = f" (it recorded {recorded}, which is not here)" if recorded else ""
    raise CheckpointError(
        f"{step} is a SpecForge training checkpoint: its weights are in {TRAINING_STATE} but its architecture "
        f"is in the --draft-config JSON it was trained with{where}. Set draft.config=PATH_TO_THAT_JSON, "
        f"{EXPORT_HINT}."
    )


def load_state(step: Path) -> dict:
    """``training_state.pt`` read safely and lazily (it also holds the optimizer's state, often larger)."""
    torch = import_torch()

    path = step / TRAINING_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {path} with torch.load(weights_only=True): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. The file is "
                              "damaged or not a SpecForge checkpoint.") from exc
    if not isinstance(state, dict) or not isinstance(state.get("draft_state_dict"), dict):
        raise CheckpointError(f"{path} holds no draft_state_dict: not a SpecForge EAGLE-3 checkpoint.")
    return state


def load_weights(step: Path) -> dict:
    return dict(load_state(step)["draft_state_dict"])


def _recorded_config(step: Path) -> Path | None:
    """The ``draft_config`` path in ``specforge_model_provenance``: ``(("draft_config", (kind, path, ...)), ...)``."""
    try:
        provenance = load_state(step).get("specforge_model_provenance") or ()
        for key, value in provenance:
            if key == "draft_config" and isinstance(value, (tuple, list)) and len(value) > 1:
                return Path(str(value[1]))
    except (CheckpointError, TypeError, ValueError):
        return None
    return None
