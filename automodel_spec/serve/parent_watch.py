"""Tie a server's life to the process that launched it, so no server, and no process of its, outlives
its launcher.

The server runs in a session of its own (so it can be stopped as a group), which also means that
when the launcher is killed outright (SIGKILL, an OOM kill, a job scheduler's hard limit) nothing
stops the server: it keeps the GPU memory and the port. On Linux the kernel can signal a process
when its parent dies (``PR_SET_PDEATHSIG``). So the launch goes through this module:

    python -m automodel_spec.serve.parent_watch PARENT_PID ARGV...

It asks for SIGTERM on the launcher's death, checks that the launcher is still there, and runs the
server as its child, passing on SIGTERM / SIGINT / SIGHUP. When the server has exited, by itself,
by a signal or because its launcher died, every other process left in the group (SGLang's
schedulers and detokenizer, which its own shutdown does not always take along: one outlived a
SIGTERM'd sweep on the GPU machine) gets SIGTERM, then SIGKILL after ``SWEEP_GRACE_S``. The wrapper
then ends the way the server did (its exit code, or the same signal). Elsewhere the argv runs as is.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from automodel_spec.io.console_log import log_to_console
from automodel_spec.io.process_state import group_members, has_live_thread

_PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SWEEP_GRACE_S = 5.0
log = logging.getLogger("automodel_spec.serve.parent_watch")  # __name__ is "__main__" under python -m


def guarded_argv(argv: list[str], parent_pid: int | None = None) -> list[str]:
    """``argv`` wrapped so that its process is sent SIGTERM when ``parent_pid`` (default: us) dies.

    The kernel ties the signal to the launching *thread*: start the server from a thread that
    outlives it (the main thread, normally).
    """
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-m", __name__, str(parent_pid or os.getpid()), *argv]


def main(args: list[str] | None = None) -> int:
    log_to_console()  # its own process: messages go to the server's log
    args = sys.argv[1:] if args is None else args
    if len(args) < 2 or not args[0].isdigit():
        log.error("usage: python -m automodel_spec.serve.parent_watch PARENT_PID ARGV...")
        return 2
    parent, argv = int(args[0]), args[1:]
    if not _die_with_parent():
        log.warning("[parent_watch] prctl failed (errno %d); the server will not stop with its launcher",
                    ctypes.get_errno())
    if os.getppid() != parent:  # the launcher died before the request above took effect
        return 143
    try:  # the server too gets SIGTERM should this wrapper be SIGKILLed
        server = subprocess.Popen(argv, preexec_fn=_die_with_parent)
    except OSError as exc:
        log.error("cannot start the server (%s): %s", argv[0], exc)
        return 127
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: _forward(server, signum))
    code = server.wait()
    if os.getpgrp() == os.getpid():  # only a group of our own is ours to sweep
        sweep_group(os.getpid())
    if code < 0:  # end as the server did, so the launcher reads the same -N
        if -code != signal.SIGKILL:  # SIGKILL's action cannot be set (nor caught)
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def sweep_group(pgid: int, grace_s: float = SWEEP_GRACE_S) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, to every live process of ``pgid`` but this one;
    returns the pids that had to be signalled."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)  # what comes now is for the leftovers, not for us
    left = _others(pgid)
    for pid in left:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _others(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _others(pgid):
        _kill(pid, signal.SIGKILL)
    if left:
        log.warning("[parent_watch] the server left %d process(es) behind (pids %s); stopped them",
                    len(left), ", ".join(map(str, left)))
    return left


def _others(pgid: int) -> list[int]:
    return [pid for pid in group_members(pgid) if pid != os.getpid() and has_live_thread(pid)]


def _forward(server: subprocess.Popen, signum: int) -> None:
    try:
        server.send_signal(signum)
    except ProcessLookupError:
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> bool:
    """Ask the kernel for SIGTERM when this process's parent dies (Linux); ``False`` if refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0


if __name__ == "__main__":
    sys.exit(main())
