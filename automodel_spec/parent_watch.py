"""Tie a server's life to the process that launched it, so no server outlives its launcher.

The server runs in a session of its own (so it can be stopped as a group), which also means that
when the launcher is killed outright (SIGKILL, an OOM kill, a job scheduler's hard limit) nothing
stops the server: it keeps the GPU memory and the port. On Linux the kernel can signal a process
when its parent dies (``PR_SET_PDEATHSIG``); that setting survives ``exec``. So the launch goes
through this module:

    python -m automodel_spec.parent_watch PARENT_PID ARGV...

which asks for SIGTERM on the parent's death (SGLang then shuts down its own children), checks
that the parent is still there, and ``exec``s the server in its place. Elsewhere the argv runs as is.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

from automodel_spec.console_log import log_to_console

_PR_SET_PDEATHSIG = 1
log = logging.getLogger("automodel_spec.parent_watch")  # __name__ is "__main__" under python -m


def guarded_argv(argv: list[str], parent_pid: int | None = None) -> list[str]:
    """``argv`` wrapped so that its process is sent SIGTERM when ``parent_pid`` (default: us) dies.

    The kernel ties the signal to the launching *thread*: start the server from a thread that
    outlives it (the main thread, normally).
    """
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-m", __name__, str(parent_pid or os.getpid()), *argv]


def main(args: list[str] | None = None) -> int:
    log_to_console()  # its own process, before the server replaces it: messages go to the server's log
    args = sys.argv[1:] if args is None else args
    if len(args) < 2 or not args[0].isdigit():
        log.error("usage: python -m automodel_spec.parent_watch PARENT_PID ARGV...")
        return 2
    parent, argv = int(args[0]), args[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("[parent_watch] prctl failed (errno %d); the server will not stop with its launcher",
                    ctypes.get_errno())
    if os.getppid() != parent:  # the launcher died before the request above took effect
        return 143
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        log.error("cannot start the server (%s): %s", argv[0], exc)
        return 127


if __name__ == "__main__":
    sys.exit(main())
