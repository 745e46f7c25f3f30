"""Read a JSON file someone else wrote, with a message that names the file, what is wrong and what to do."""

from __future__ import annotations

import json
from pathlib import Path

from automodel_spec.errors import CheckpointError

COPY_AGAIN = "Copy it again from the checkpoint it came from."


def read_json_value(path: Path, remedy: str = COPY_AGAIN):
    """The JSON value in ``path`` (any type).

    Args:
        path: the file.
        remedy: what the user should do when the file is damaged, ending the message.

    Raises:
        CheckpointError: the file cannot be read, is not UTF-8 text, is empty or is not JSON.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}. Check that the file is there and that this "
                              "user may read it.") from exc
    except UnicodeError as exc:
        raise CheckpointError(f"{path} is not text ({exc}): the file is damaged. {remedy}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        what = "is empty" if not text.strip() else f"is not valid JSON ({exc})"
        raise CheckpointError(f"{path} {what}: the file is damaged or was cut off. {remedy}") from exc


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
