"""What training measured per draft position, where the training output records it.

The producers' own outputs do not: NeMo Automodel 0.7.0's checkpoints hold weights, ``eagle_meta.pt``,
``config.yaml`` and RNG state (later releases add ``losses.json`` with losses and one accuracy, and log
``tau_sim`` to the console and W&B only); SpecForge 0.2.0's ``training_state.pt`` holds no accuracy.
The training scripts of this project's real pair (``scripts/gpu/real_pair/``) write them beside the
run:

* ``automodel_train.json`` in the Automodel run directory: ``chain_survival_per_depth`` (Automodel's
  per-TTT-step prefix hits over supervised positions: the share of positions whose first ``d`` drafts
  all match, the chain's survival to depth ``d``) and ``tau_sim``;
* ``specforge_train.json`` beside SpecForge's checkpoints (the parent of its ``sglang_export/``):
  ``held_out.acc_per_position`` (per TTT position, the draft's argmax against the target's on windows
  not trained on); survival to depth ``d`` is read as the product of the first ``d`` (each position's
  accuracy is measured given the draft's own earlier positions, so the product is an estimate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automodel_spec.errors import SpecError

AUTOMODEL_FILE = "automodel_train.json"
SPECFORGE_FILE = "specforge_train.json"


@dataclass
class TrainedDepths:
    """Training's survival per depth: ``survival[d - 1]`` is the share of positions whose first ``d``
    drafts match the target's greedy tokens, as training measured it.

    Attributes:
        source: the file it was read from.
        how: ``chain survival`` (measured) or ``product of per-position accuracies`` (estimated).
    """

    source: str
    survival: list[float]
    how: str


def read_trained_depths(draft_path: str | Path | None) -> TrainedDepths | None:
    """Training's per-depth figures for the draft at ``draft_path`` (its directory or up to two above
    it), ``None`` where none is recorded or the file cannot be read as one."""
    from automodel_spec.io.json_file import read_json

    if not draft_path:
        return None
    start = Path(draft_path).expanduser()
    for d in [start, *list(start.parents)[:2]]:
        for name in (AUTOMODEL_FILE, SPECFORGE_FILE):
            path = d / name
            if not path.is_file():
                continue
            try:
                figures = _figures(read_json(path), name)
            except (SpecError, TypeError, ValueError, KeyError, AttributeError):
                return None  # a damaged or foreign file: no figures, and the bench goes on
            return TrainedDepths(source=str(path), survival=figures[0], how=figures[1]) if figures else None
    return None


def _figures(data: dict, name: str) -> tuple[list[float], str] | None:
    if name == AUTOMODEL_FILE:
        survive = data.get("chain_survival_per_depth")
        return ([float(x) for x in survive], "chain survival") if survive else None
    acc = (data.get("held_out") or {}).get("acc_per_position")
    if not acc:
        return None
    out, p = [], 1.0
    for a in acc:
        p *= float(a)
        out.append(p)
    return out, "product of per-position accuracies"
