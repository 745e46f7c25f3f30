"""Whether a process still runs, thread by thread, as Linux's ``/proc`` tells.

A process whose main thread is a zombie is not necessarily gone: when a multi-threaded process dies,
another of its threads can still be releasing what they share (for an SGLang scheduler, tens of GB
of GPU memory). Zombies awaiting a reaper hold nothing and count as gone. Without ``/proc`` only
the pid can be checked.
"""

from __future__ import annotations

import os


def process_running(pid: int) -> bool:
    """``pid`` exists and one of its threads still runs (another user's process counts as running)."""
    return _running(os.kill, pid, lambda: [pid])


def group_running(pgid: int) -> bool:
    """Any process of the process group ``pgid`` still runs (zombies awaiting a reaper do not count)."""
    return _running(os.killpg, pgid, lambda: group_members(pgid))


def _running(send_signal, ident: int, members) -> bool:
    try:
        send_signal(ident, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    return any(has_live_thread(pid) for pid in members())


def group_members(pgid: int) -> list[int]:
    """The pids of the process group ``pgid`` (zombies included; empty without ``/proc``)."""
    if not os.path.isdir("/proc"):
        return []
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return members


def has_live_thread(pid: int) -> bool:
    """Whether any thread of ``pid`` is neither a zombie nor dead, by ``/proc/PID/task``."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = [str(pid)]
    return any(_state(f"/proc/{pid}/task/{tid}/stat") not in ("Z", "X", None) for tid in tids)


def process_start(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``None`` without ``/proc``): with the pid, it
    tells a process from a later one that was given the same pid."""
    return _stat_int(pid, 19)


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (``None`` when gone or without ``/proc``)."""
    return _stat_int(pid, 1)


def process_group(pid: int) -> int | None:
    """The process group of ``pid`` (``None`` when gone or without ``/proc``)."""
    return _stat_int(pid, 2)


def _stat_int(pid: int, index: int) -> int | None:
    """Field ``index`` (counted after the command name) of ``/proc/PID/stat`` as an integer."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    try:
        return int(fields[index]) if fields else None
    except (IndexError, ValueError):
        return None


def _state(stat_path: str) -> str | None:
    fields = _stat_fields(stat_path)
    return fields[0] if fields else None


def _stat_fields(stat_path: str) -> list[str] | None:
    """The fields of a ``stat`` file after the command name (which may hold spaces and parentheses)."""
    try:
        with open(stat_path) as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
