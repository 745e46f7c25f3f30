"""Drive ``recipes/serve.py`` as a user would: a real subprocess, its console, and its signals."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from automodel_spec.io.process_state import parent_pid, process_running, process_start

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"test generation: (\d+) tokens, accept length ([0-9.]+|n/a)|speculation: off")


def sglang_processes() -> list[str]:
    """Live SGLang server processes that count against this suite (there must be none after a stop).

    One suite on the host (``CUDA_VISIBLE_DEVICES`` unset): every SGLang process on it. Several
    suites side by side, each pinned to its GPUs: only the SGLang processes this suite started, that
    is every one seen so far below this pytest process (``track_own_sglang``); a leaked one stays
    counted after it is re-parented, by its pid and start time. The environment of a process is no
    guide: SGLang's schedulers set their process title, which overwrites what ``/proc/PID/environ``
    shows. Zombies are dead and hold neither GPU memory nor ports; they stay listed only where PID 1
    of a container does not reap orphans, so they are not counted (``process_running``: a zombie
    main thread whose other threads still run is not dead yet).
    """
    track_own_sglang()
    scoped = os.environ.get("CUDA_VISIBLE_DEVICES") is not None
    live = []
    for pid, line in _sglang_table().items():
        if process_running(pid) and (not scoped or (pid, process_start(pid)) in _OWN_SGLANG):
            live.append(line)
    return live


def track_own_sglang() -> None:
    """Remember the SGLang processes now below this process (a fixture calls it while tests run)."""
    table = _sglang_table()
    for pid in _descendants(os.getpid()):
        if pid in table:
            _OWN_SGLANG.add((pid, process_start(pid)))


_OWN_SGLANG: set[tuple[int, int | None]] = set()


def _sglang_table() -> dict[int, str]:
    """pid -> ``ps`` line of every SGLang server process on the host (main process and workers)."""
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    table = {}
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) == 3 and (("sglang" in parts[2] and "launch_server" in parts[2]) or "sglang::" in parts[2]):
            table[int(parts[0])] = line
    return table


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent_pid(int(entry))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def gpu_query_scope() -> list[str]:
    """``nvidia-smi`` arguments that limit a query to this suite's GPUs (all GPUs where unset)."""
    mine = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ["-i", mine] if mine else []
