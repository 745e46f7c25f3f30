"""The target model's path: a local HF directory or a hub id, checked, expanded and read.

Which target a configuration names (the demo's, when unset beside the demo draft) is a rule between
fields, ``config.rules.target_path``; everything done with the path itself is here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import ExitStack
from pathlib import Path

from automodel_spec.draft.resolve import looks_like_local_path
from automodel_spec.errors import CheckpointError
from automodel_spec.export.draft_plan import Problems, check_sizes
from automodel_spec.export.serving_dtype import unknown_dtype
from automodel_spec.io.file_digest import file_digest, is_remembered
from automodel_spec.io.file_lock import file_lock
from automodel_spec.io.json_file import read_json
from automodel_spec.io.path_lookup import missing_reason

log = logging.getLogger(__name__)

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


def target_content_key(target: str | None, memo_dir: Path) -> str | None:
    """One digest of what a local target holds (every file at the top of its directory: name and content).

    A measurement is the target's as much as the draft's, and a target retrained, widened or copied over
    in place keeps its path: a sweep resumed on it must measure again, not reuse what the old weights
    gave. Each file's digest is remembered by its stat in ``memo_dir`` (``io.file_digest``), so an
    unchanged target is read once; jobs starting side by side take turns, so it is read by one of them.

    Returns:
        The digest (hex), or ``None`` for a hub id (``target.revision`` names what it holds).

    Raises:
        CheckpointError: a file of the target cannot be read.
    """
    path = Path(target).expanduser() if target else None
    if path is None or not path.is_dir():
        return None
    files = sorted(f for f in path.iterdir() if not f.name.startswith(".") and f.is_file())
    where = hashlib.blake2b(os.fsencode(path.resolve()), digest_size=12).hexdigest()
    with ExitStack() as turns:
        try:
            turns.enter_context(file_lock(memo_dir / f"target-{where}.lock"))
        except OSError:  # a cache that cannot be written: each job reads the target itself, nothing is lost
            pass
        unread = sum(f.stat().st_size for f in files if not is_remembered(f, memo_dir))
        if unread > 1 << 30:  # seconds to minutes of reading: said, since nothing else shows progress then
            log.info("[bench] reading the target's files once (%.1f GB), to tell its weights from other weights "
                     "at the same path; remembered by their stat in %s", unread / 1e9, memo_dir)
        h = hashlib.blake2b(digest_size=10)
        for f in files:
            try:
                digest = file_digest(f, memo_dir)
            except OSError as exc:
                raise CheckpointError(f"target.path={target}: cannot read {f} ({exc.strerror or exc}); a benchmark "
                                      "keys its results on the target's files, and SGLang reads them too: make it "
                                      "readable.") from exc
            h.update(os.fsencode(f.name) + b"\0" + digest.encode())
        return h.hexdigest()
