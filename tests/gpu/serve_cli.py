"""Drive ``recipes/serve.py`` as a user would: a real subprocess, its console, and its signals."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"test generation: (\d+) tokens, accept length ([0-9.]+|n/a)|speculation: off")


def sglang_processes() -> list[str]:
    """Live SGLang server processes (there must be none after a stop).

    Zombies (state Z) are dead and hold neither GPU memory nor ports; they stay listed only where
    PID 1 of a container does not reap orphans, so they are not counted.
    """
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    live = []
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) == 3 and not parts[1].startswith("Z") and (
                ("sglang" in parts[2] and "launch_server" in parts[2]) or "sglang::" in parts[2]):
            live.append(line)
    return live
