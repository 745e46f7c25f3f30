"""Read, once, everything a draft's export is planned from: its config, weights, meta and recipe.

Planning (``preflight.plan_draft``) is pure: it takes these values and reads no file, so the
sources are read here once per launch and passed along.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automodel_spec.draft.resolve import ResolvedDraft
from automodel_spec.draft.weights import load_draft_weights, load_eagle_meta
from automodel_spec.errors import CheckpointError
from automodel_spec.io.json_file import read_json
from automodel_spec.io.yaml_file import read_yaml

_AUX_KEYS = ("aux_layer_ids", "eagle_aux_hidden_state_layer_ids", "aux_hidden_state_layer_ids")


@dataclass
class DraftSources:
    """What a local draft holds, as read from disk.

    Attributes:
        config: the draft's ``config.json`` (or the config ``draft.config`` names).
        tensors: its weights, by the names in the files.
        meta: ``eagle_meta.pt``, when the checkpoint has one.
        recipe_aux_layer_ids: aux layer ids from the Automodel recipe saved beside the checkpoint
            (``config.yaml``), when it names any.
    """

    config: dict
    tensors: dict
    meta: dict | None = None
    recipe_aux_layer_ids: list[int] | None = None


def read_draft_sources(resolved: ResolvedDraft, allow_unsafe_pickle: bool = False) -> DraftSources:
    """Read a local draft's config, weights, meta and recipe aux ids.

    Raises:
        CheckpointError: a file cannot be read or is damaged (the message names it).
        MissingDependencyError: safetensors is not installed.
    """
    config = read_json(resolved.config_file)
    tensors = load_draft_weights(resolved, allow_unsafe_pickle)
    return DraftSources(config=config, tensors=tensors, meta=load_eagle_meta(resolved.meta_path),
                        recipe_aux_layer_ids=find_recipe_aux_layer_ids(resolved.checkpoint_dir))


def find_recipe_aux_layer_ids(checkpoint_dir: Path | None) -> list[int] | None:
    """Aux layer ids from the Automodel recipe saved beside the checkpoint (``config.yaml``), if any."""
    if checkpoint_dir is None or not (checkpoint_dir / "config.yaml").is_file():
        return None
    doc = read_yaml(checkpoint_dir / "config.yaml", remedy="Remove it or copy the recipe the training was run "
                    "with (the draft is served without it, with the default aux layers or draft.aux_layer_ids).")
    found = _find_key(doc, _AUX_KEYS)
    if found is None or found == []:  # an empty list in a recipe means "the default"
        return None
    if not isinstance(found, list) or not all(isinstance(i, int) for i in found):
        raise CheckpointError(f"{checkpoint_dir / 'config.yaml'} has aux layer ids {found!r}, not a list of ints.")
    return found


def _find_key(node, keys):
    """The first non-null value of one of ``keys`` in nested dicts and lists, depth first.

    Iterative, and each dict or list is visited once: YAML aliases share one object between several
    places (or a place inside itself), which a plain recursive walk would follow again every time.
    """
    stack, seen = [node], set()
    while stack:
        item = stack.pop()
        if not isinstance(item, (dict, list)) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            for k, v in item.items():
                if k in keys and v is not None:
                    return v
            stack.extend(reversed(list(item.values())))
        else:
            stack.extend(reversed(item))
    return None
