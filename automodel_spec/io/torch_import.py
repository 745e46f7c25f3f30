"""torch and safetensors, imported where they are needed and with SIGINT / SIGTERM held meanwhile."""

from __future__ import annotations

import importlib

from automodel_spec.io.signals import signals_held

_native_loaded = False  # both imported: later calls have nothing to do


def import_native_modules() -> None:
    """Import torch and safetensors with SIGINT / SIGTERM held back until they are loaded.

    An exception raised by a signal handler (or Python's own Ctrl-C) while their native extensions
    initialize was seen to abort the interpreter (SIGABRT, exit -6) rather than unwinding, or to leave
    safetensors half-imported, reported as "not installed" (exit 2). Held back, the signal arrives a
    moment later and unwinds like any other (exit 130 / 143); once imported, they are never initialized
    again. A missing package is left to the code that uses it, which reports it with its install
    command (exit 2).
    """
    global _native_loaded
    if _native_loaded:  # import_torch is called on the reference's hot path: no signal mask, no lookup
        return
    loaded = True
    with signals_held():
        for name in ("torch", "safetensors.torch"):
            try:
                importlib.import_module(name)
            except ImportError:
                loaded = False
    _native_loaded = loaded


def import_torch():
    """torch, imported as ``import_native_modules`` imports it (SIGINT / SIGTERM held back meanwhile).

    The package imports torch only through this, where it needs it: a run that never touches a tensor
    (``print_only`` of a built export, a benchmark point whose export is cached, ``--help``) does not pay
    its ~1.5 s of CPU, and one that does is not aborted by a signal during its native initialization.
    """
    import_native_modules()
    import torch

    return torch
