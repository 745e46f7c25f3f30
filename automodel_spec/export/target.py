"""The target model's path: a local HF directory or a hub id, checked, expanded and read.

Which target a configuration names (the demo's, when unset beside the demo draft) is a rule between
fields, ``config.rules.target_path``; everything done with the path itself is here.
"""

from __future__ import annotations

from pathlib import Path

from automodel_spec.draft.resolve import looks_like_local_path
from automodel_spec.errors import CheckpointError
from automodel_spec.export.draft_plan import Problems, check_sizes
from automodel_spec.export.serving_dtype import unknown_dtype
from automodel_spec.io.json_file import read_json
from automodel_spec.io.path_lookup import missing_reason

# sizes SGLang builds the target from: when present, each must be a whole number >= 1
_TARGET_SIZES = ("hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def check_target_path(target: str) -> str:
    """``target`` as SGLang gets it: a local directory with ``~`` expanded, or a hub id as given.

    SGLang gets the path as is, and no shell expands ``~`` on the way, so it is expanded here.

    Raises:
        CheckpointError: a local directory without ``config.json``, or a local-looking path that
            does not exist (it is not taken as a hub id).
    """
    path = Path(target).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"target.path={target} has no config.json; point it at the model's HF directory.")
    elif (reason := missing_reason(path)).startswith("is a"):  # a link loop, a broken link
        raise CheckpointError(f"target.path={target} {reason}.")
    elif looks_like_local_path(target):
        raise CheckpointError(
            f"target.path={target} does not exist. It looks like a local path, so it is not taken as a hub id; "
            "check the spelling, or give a hub id as org/name."
        )
    return str(path) if target.startswith("~") else target


def read_target_config(target: str | None) -> dict | None:
    """The target's ``config.json`` (text part) when ``target`` is a local directory, else ``None``.

    Raises:
        CheckpointError: the config cannot be read, or a size in it is not a whole number >= 1.
    """
    if not target:
        return None
    path = Path(target).expanduser()
    if not (path / "config.json").is_file():
        return None
    cfg = read_json(path / "config.json")
    text = cfg.get("text_config")
    cfg = text if isinstance(text, dict) else cfg
    problems = Problems(f"target.path={target}")
    check_sizes(cfg, (), _TARGET_SIZES, path / "config.json", problems)
    dtype = unknown_dtype(cfg)
    if dtype is not None:  # --dtype auto would run the target (and the draft) in a guess
        problems.add(f"it names {dtype}.")
    if problems.items:
        raise CheckpointError(f"the target's {path / 'config.json'} cannot be checked against: "
                              + "; ".join(problems.items) + " Fix the target's config.json, or give the right target.")
    return cfg
