"""Drive ``recipes/serve.py`` as a user would: a real subprocess, its console, and its signals."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from automodel_spec.process_state import process_running

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"test generation: (\d+) tokens, accept length ([0-9.]+|n/a)|speculation: off")


def sglang_processes() -> list[str]:
    """Live SGLang server processes on this suite's GPUs (there must be none after a stop).

    Zombies are dead and hold neither GPU memory nor ports; they stay listed only where PID 1 of a
    container does not reap orphans, so they are not counted (``process_running``: a zombie main
    thread whose other threads still run is not dead yet). Where the suite runs with
    ``CUDA_VISIBLE_DEVICES`` set (several suites side by side on one host, each on its own GPUs),
    only the processes started with the same value count: the others belong to another suite.
    """
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    mine = os.environ.get("CUDA_VISIBLE_DEVICES")
    live = []
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) == 3 and process_running(int(parts[0])) and (
                ("sglang" in parts[2] and "launch_server" in parts[2]) or "sglang::" in parts[2]):
            if mine is None or _visible_devices(parts[0]) in (mine, None):
                live.append(line)
    return live


def gpu_query_scope() -> list[str]:
    """``nvidia-smi`` arguments that limit a query to this suite's GPUs (all GPUs where unset)."""
    mine = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ["-i", mine] if mine else []


def _visible_devices(pid: str) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` a process was started with (``None``: unset or unreadable)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"CUDA_VISIBLE_DEVICES="):
            return item.split(b"=", 1)[1].decode()
    return None
