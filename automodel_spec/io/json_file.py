"""Read a JSON file someone else wrote, with a message that names the file, what is wrong and what to do.

A checkpoint's JSON is read bounded: at most ``MAX_BYTES`` (a config or a safetensors index is
kilobytes; a 405B model's index is about 100 kB) and ``MAX_DEPTH`` levels of nesting (configs nest 3 or 4
deep). Python's parser recurses once a level, so thousands of levels end in a ``RecursionError``; the
depth is measured before parsing, without recursion.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from automodel_spec.errors import CheckpointError

COPY_AGAIN = "Copy it again from the checkpoint it came from."
MAX_BYTES = 64 << 20
MAX_DEPTH = 64
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def read_bounded_bytes(path: Path, limit: int, what: str, remedy: str = COPY_AGAIN) -> bytes:
    """At most ``limit`` bytes of ``path``; a larger file is refused without reading it all.

    Raises:
        CheckpointError: the file cannot be read, or is larger than ``limit``.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}. Check that the file is there and that this "
                              "user may read it.") from exc
    if len(data) > limit:
        raise CheckpointError(f"{path} is larger than {limit >> 20} MiB, far more than any {what} holds: it is not "
                              f"one (or it is damaged). {remedy}")
    return data


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep JSON ``text`` nests, counted up to ``limit + 1`` (without recursion; strings skipped)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    while brackets and depth <= limit:  # each pass removes the innermost level
        fewer = _INNERMOST.sub("", brackets)
        if fewer == brackets:  # unbalanced: the parser says where
            break
        brackets, depth = fewer, depth + 1
    return depth


def parse_json(text: str, where: object, remedy: str = COPY_AGAIN):
    """The JSON value in ``text`` (read from ``where``), nested at most ``MAX_DEPTH`` levels.

    Raises:
        CheckpointError: empty, not JSON, or nested deeper than ``MAX_DEPTH``.
    """
    if nesting_depth(text) > MAX_DEPTH:
        raise CheckpointError(f"{where} nests more than {MAX_DEPTH} levels deep; no config or index does (they "
                              f"nest 3 or 4): the file is damaged or not a config. {remedy}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        what = "is empty" if not text.strip() else f"is not valid JSON ({exc})"
        raise CheckpointError(f"{where} {what}: the file is damaged or was cut off. {remedy}") from exc


def read_json_value(path: Path, remedy: str = COPY_AGAIN):
    """The JSON value in ``path`` (any type), read bounded (``MAX_BYTES``, ``MAX_DEPTH``).

    Args:
        path: the file.
        remedy: what the user should do when the file is damaged, ending the message.

    Raises:
        CheckpointError: the file cannot be read, is too large, is not UTF-8 text, is empty, is not JSON,
            or nests too deep.
    """
    data = read_bounded_bytes(path, MAX_BYTES, "config or index", remedy)
    try:
        text = data.decode("utf-8")
    except UnicodeError as exc:
        raise CheckpointError(f"{path} is not text ({exc}): the file is damaged. {remedy}") from exc
    return parse_json(text, path, remedy)


def read_json(path: Path) -> dict:
    """A JSON object (a model's settings) from ``path``.

    Raises:
        CheckpointError: the file cannot be read, is not JSON, or holds something else than an object.
    """
    data = read_json_value(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not a JSON object with the model's "
                              "settings: it is not a config.json. Copy the right file.")
    return data
