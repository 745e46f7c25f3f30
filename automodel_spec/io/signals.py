"""Every rule about SIGINT and SIGTERM: what they raise, what is remembered, when they wait.

SIGTERM unwinds like Ctrl-C (``Terminated`` is a ``KeyboardInterrupt``), so cleanup runs the same
way for both: a server's process group is stopped, a half-written export is removed. A recipe run
holds both signals from the package's first import until its handlers are in place (the package's
``__init__`` asks for it); ``torch_import`` imports torch / safetensors with them held.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HELD = (signal.SIGINT, signal.SIGTERM)
_mask = getattr(signal, "pthread_sigmask", None)  # POSIX only: elsewhere nothing is held
_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding like Ctrl-C (cleanup runs) but ending with 143."""


# Set once SIGTERM has arrived. Native code that calls back into Python (torch building a tensor while
# safetensors reads a file) can catch the handler's exception and raise another in its place (seen:
# "could not determine the shape of object type 'torch.storage.UntypedStorage'", which the reader
# then reported as a damaged file): whatever the job raises after it, the run ends as terminated.
_terminated = False

# Set once SIGINT has arrived. CPython drops an exception raised inside a weakref callback with only an
# "Exception ignored" message (seen: a Ctrl-C landing in importlib's module-lock callback during an
# import, after which the export ran to its end and exited 0): a job can return normally after a
# signal, and the recipe then ends the run as the signal would have.
_interrupted = False


def raise_terminated(signum, frame) -> None:
    """SIGTERM's handler: remember it, then unwind as ``Terminated``."""
    global _terminated
    _terminated = True
    raise Terminated()


def raise_interrupted(signum, frame) -> None:
    """SIGINT's handler: Python's own ``KeyboardInterrupt``, but remembered (see ``_interrupted``)."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt()


def raise_on_signals() -> None:
    """Install both handlers: SIGINT raises ``KeyboardInterrupt``, SIGTERM ``Terminated``, each remembered."""
    signal.signal(signal.SIGINT, raise_interrupted)
    signal.signal(signal.SIGTERM, raise_terminated)


def restore_default_actions() -> None:
    """Let SIGINT and SIGTERM end the process by their default action again.

    Once the work is done, a signal must not raise a ``KeyboardInterrupt`` traceback from the middle
    of the interpreter's shutdown.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def raise_signal_seen(cause: BaseException | None = None) -> None:
    """Raise the exception of a SIGTERM / SIGINT that arrived, whatever became of its own.

    Does nothing when neither has arrived since the handlers were installed.
    """
    if _terminated:
        raise Terminated() from cause
    if _interrupted:
        raise KeyboardInterrupt() from cause


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM inside the block; one that came meanwhile is delivered on leaving it."""
    before = _mask(signal.SIG_BLOCK, _HELD) if _mask else None
    try:
        yield
    finally:
        if _mask:
            _mask(signal.SIG_SETMASK, before)


_held_while_starting = False


def hold_signals_while_a_recipe_starts() -> None:
    """Hold SIGINT and SIGTERM when the program is one of ``recipes/``, until ``release_signals``.

    A Ctrl-C or SIGTERM raising inside the import of Hydra, OmegaConf or torch can leave a module half
    initialized and end in an unrelated error's traceback (seen: an ``AttributeError`` from OmegaConf,
    exit 1, for a Ctrl-C 0.1 s after the start). Held, the signal arrives once the recipe handles it
    (exit 130 / 143). The package's ``__init__`` calls this, so it happens at the recipe's first
    import, whatever it is (the recipes import nothing but the package); any other program (a test,
    a user's script importing the library) keeps its own signals.
    """
    global _held_while_starting
    program = getattr(sys.modules.get("__main__"), "__file__", None)
    if _mask and program and not _held_while_starting and Path(program).resolve().parent == _RECIPES:
        _mask(signal.SIG_BLOCK, _HELD)
        _held_while_starting = True


def release_signals() -> None:
    """Let signals held since the recipe started in: one that arrived meanwhile is delivered now."""
    global _held_while_starting
    if _held_while_starting:
        _held_while_starting = False
        _mask(signal.SIG_UNBLOCK, _HELD)
