"""Read a YAML file someone else wrote (a training recipe saved beside a checkpoint), bounded.

``yaml.safe_load`` runs no code, but a hostile or damaged file can still hang it or crash it: aliases
expand to many copies of what they name (a "billion laughs" of a few hundred bytes stands for 10^11
nodes), an alias inside the node it names builds a structure that contains itself, and each level of
nesting is a level of recursion (thousands of them end in a ``RecursionError``). The loader here
refuses each, with the file's name: at most ``MAX_BYTES``, ``MAX_DEPTH`` levels, ``MAX_NODES`` nodes
with every alias counted as the nodes it expands to (an Automodel recipe has a few hundred).
"""

from __future__ import annotations

from pathlib import Path

from automodel_spec.errors import CheckpointError
from automodel_spec.io.json_file import read_bounded_bytes

MAX_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_NODES = 1_000_000


class _Refused(Exception):
    """What the bounded loader refuses, and why."""


def _loader_class():
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """``SafeLoader`` that counts nodes (aliases by what they expand to), depth, and refuses self-reference."""

        def __init__(self, stream):
            super().__init__(stream)
            self._depth = 0
            self._nodes = 0
            self._sizes: dict[int, int] = {}  # id(node) -> the nodes it expands to, once composed

        def _count(self, n: int) -> None:
            self._nodes += n
            if self._nodes > MAX_NODES:
                raise _Refused(f"its aliases expand to more than {MAX_NODES:,} nodes (a recipe has a few hundred): "
                               "a \"billion laughs\" file, or damaged")

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                anchor = self.peek_event().anchor
                node = self.anchors.get(anchor)
                if node is not None and id(node) not in self._sizes:
                    raise _Refused(f"the alias *{anchor} refers to a node that contains it (a structure that holds "
                                   "itself)")
                self._count(self._sizes.get(id(node), 1))
                return super().compose_node(parent, index)
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Refused(f"it nests more than {MAX_DEPTH} levels deep (a recipe nests a few)")
            before = self._nodes
            node = super().compose_node(parent, index)
            self._depth -= 1
            self._count(1)
            self._sizes[id(node)] = self._nodes - before
            return node

    return BoundedLoader


def read_yaml(path: Path, remedy: str):
    """The YAML document in ``path``, read bounded (``MAX_BYTES``, ``MAX_DEPTH``, ``MAX_NODES``).

    Args:
        path: the file.
        remedy: what the user should do when the file is refused, ending the message.

    Raises:
        CheckpointError: the file cannot be read, is too large, is not YAML, or is refused by a bound.
    """
    import yaml

    data = read_bounded_bytes(path, MAX_BYTES, "training recipe", remedy)
    loader = _loader_class()(data)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise CheckpointError(f"{path} is refused: {exc}. {remedy}") from None
    except yaml.YAMLError as exc:
        raise CheckpointError(f"cannot parse {path}: {exc}") from exc
    finally:
        loader.dispose()
