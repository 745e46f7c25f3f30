"""Drive ``recipes/serve.py`` as a user would: a real subprocess, its console, and its signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"test generation: (\d+) tokens, accept length ([0-9.]+|n/a)|speculation: off")


class ServeProcess:
    """``python recipes/serve.py ...`` in its own session, its output collected line by line."""

    def __init__(self, overrides: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "recipes" / "serve.py"), *overrides],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            cwd=str(log_path.parent), env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log_path, "w") as log:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                log.write(line)
                log.flush()

    def wait_for(self, pattern: re.Pattern | str, timeout: float) -> re.Match:
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                m = pattern.search(self.lines[seen])
                seen += 1
                if m:
                    return m
            if self.proc.poll() is not None and seen >= len(self.lines):
                self._reader.join(timeout=5)
                raise AssertionError(f"serve.py exited with {self.proc.returncode} before {pattern.pattern!r}:\n"
                                     + "\n".join(self.lines[-40:]))
            time.sleep(0.5)
        raise AssertionError(f"no {pattern.pattern!r} within {timeout}s:\n" + "\n".join(self.lines[-40:]))

    def interrupt(self, sig: int = signal.SIGINT, timeout: float = 90) -> int:
        """Signal serve.py alone (as a terminal's Ctrl-C reaches it); return its exit code."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


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
