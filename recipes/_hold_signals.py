"""Hold SIGINT and SIGTERM from a recipe's first import until ``_cli.main_entry`` is ready for them.

A Ctrl-C or SIGTERM raising inside the import of Hydra, OmegaConf or torch can leave a module half
initialized and end in an unrelated error's traceback (seen: an ``AttributeError`` from OmegaConf,
exit 1, for a Ctrl-C 0.1 s after the start). Held, the signal arrives once the recipe handles it
(exit 130 / 143). The recipes import this module first, for that effect, and only when one of them
is the program (a test importing a recipe keeps its own signals).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

_HELD = {signal.SIGINT, signal.SIGTERM}
_mask = getattr(signal, "pthread_sigmask", None)  # POSIX only
_main = getattr(sys.modules.get("__main__"), "__file__", None)
HOLDING = bool(_mask and _main and Path(_main).resolve().parent == Path(__file__).resolve().parent)
if HOLDING:
    _mask(signal.SIG_BLOCK, _HELD)


def release_signals() -> None:
    """Let held signals in: one that arrived meanwhile is delivered now, to the recipe's handlers."""
    if HOLDING:
        _mask(signal.SIG_UNBLOCK, _HELD)
