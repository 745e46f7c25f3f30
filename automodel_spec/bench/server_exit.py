"""A server that exits while it is measured, told for what it is: how it ended, when, its last words,
and the likely cause.

Its requests then fail with "connection refused", which names no cause. The usual one is the kernel's
out-of-memory killer (SIGKILL, with the machine's or the container's memory nearly full), so the memory
in use is sampled while a point is measured (``MemoryWatch``: the kernel frees a killed process's
memory at once, so a reading taken after the death shows none of it), and the cgroup's count of OOM
kills is compared before and after. The server's log tail names the other usual causes (CUDA out of
memory, a GPU that fell off the bus, an NCCL failure).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Memory this full when the server died of SIGKILL: the OOM killer's doing, most likely.
NEARLY_FULL = 0.95
SAMPLE_S = 0.5
MEMINFO = Path("/proc/meminfo")
# the cgroup's OOM-kill counter (v2, then v1 on kernels that count it) and its memory use and limit
CGROUP_EVENTS = (Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control"))
CGROUP_USAGE = ((Path("/sys/fs/cgroup/memory.current"), Path("/sys/fs/cgroup/memory.max")),
                (Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")))
# what a server's last lines say, and what it means (first match wins)
LOG_CAUSES = (
    (re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory on device", re.I),
     "GPU out of memory: lower sglang.mem_fraction_static, bench.concurrency or sglang.max_running_requests"),
    (re.compile(r"Xid|fallen off the bus|GPU is lost|CUDA error: (unspecified launch failure|an illegal memory access)"
                r"|cudaErrorDevicesUnavailable|ECC error", re.I),
     "a GPU fault (check nvidia-smi and the kernel log, dmesg, for Xid errors; the GPU may need a reset)"),
    (re.compile(r"NCCL (error|WARN)|ncclSystemError|ncclUnhandledCudaError", re.I),
     "an NCCL failure between the GPUs (sglang.tp_size > 1): check the interconnect, or NCCL_DEBUG=INFO"),
    (re.compile(r"No space left on device", re.I), "a full disk (the server's cache or log directory)"),
)


def memory_in_use() -> float | None:
    """The fraction of memory in use now: the machine's, or its cgroup's where a limit is set, whichever
    is fuller; ``None`` where neither can be read."""
    found = []
    try:
        info = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines() if ":" in line)
        total, available = int(info["MemTotal"].split()[0]), int(info["MemAvailable"].split()[0])
        if total > 0:
            found.append(1 - available / total)
    except (OSError, KeyError, ValueError):
        pass
    for usage, limit in CGROUP_USAGE:
        try:
            used, most = int(usage.read_text().split()[0]), limit.read_text().split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if most.isdigit() and 0 < int(most) < 2**60:  # "max" or a huge number: no limit
            found.append(used / int(most))
        break
    return max(found) if found else None


def oom_kills() -> int | None:
    """The cgroup's count of processes the OOM killer has killed (``None``: not counted here)."""
    for path in CGROUP_EVENTS:
        try:
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill" and value.strip().isdigit():
                    return int(value)
        except OSError:
            continue
    return None


class MemoryWatch:
    """Samples ``memory_in_use`` every ``SAMPLE_S`` in a thread while a point is measured, keeping the
    latest readings, and the OOM-kill count at its start (``with MemoryWatch() as watch:``)."""

    def __init__(self, sample_s: float = SAMPLE_S):
        self.sample_s = sample_s
        self.peak_recent: float | None = None  # the fullest of the last few readings
        self._recent: list[float] = []
        self.oom_kills_before = oom_kills()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-watch")

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            used = memory_in_use()
            if used is not None:
                self._recent = (self._recent + [used])[-6:]  # about the last 3 s
                self.peak_recent = max(self._recent)
            if self._stop.wait(self.sample_s):
                return


@dataclass(frozen=True)
class ServerExit:
    """How a server ended: its exit code (negative: the signal that ended it), when, and what it said."""

    returncode: int
    into_run_s: float
    uptime_s: float
    log_tail: str
    log_path: str
    memory_peak: float | None = None
    oom_killed: bool = False

    def signal_name(self) -> str | None:
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    def likely_cause(self) -> str:
        """The likely cause in words."""
        if self.oom_killed:
            return "out of memory: the kernel's OOM killer killed a process of this cgroup meanwhile"
        sig = self.signal_name()
        if sig == "SIGKILL" and self.memory_peak is not None and self.memory_peak >= NEARLY_FULL:
            return (f"out of memory: the machine's memory was {self.memory_peak:.0%} in use just before, and the "
                    "kernel's OOM killer ends a process with SIGKILL")
        for pattern, cause in LOG_CAUSES:
            if pattern.search(self.log_tail):
                return cause
        if sig == "SIGKILL":
            return ("killed from outside (SIGKILL): the OOM killer (memory was "
                    + (f"{self.memory_peak:.0%} in use" if self.memory_peak is not None else "not measured")
                    + "), a job scheduler's limit, or a user")
        if sig is not None:
            return f"ended by {sig} from outside the benchmark"
        return "it exited by itself: its last lines below say why"

    def message(self) -> str:
        how = f"was killed by {self.signal_name()}" if self.returncode < 0 else f"exited with code {self.returncode}"
        return (f"the server {how} during the benchmark, {self.into_run_s:.1f} s into it ({self.uptime_s:.1f} s "
                f"after it started). Likely cause: {self.likely_cause()}. Last lines of {self.log_path}:\n"
                f"{self.log_tail}")


def server_exit(server, measuring_since: float, watch: MemoryWatch | None) -> ServerExit | None:
    """How ``server`` (an ``SGLangServer``) ended, or ``None`` while it runs.

    Args:
        measuring_since: ``time.monotonic()`` when the benchmark began (the server was ready).
        watch: the memory readings of the run, where taken.
    """
    code = server.exit_code()
    if code is None:
        return None
    before = watch.oom_kills_before if watch else None
    after = oom_kills() if before is not None else None
    return ServerExit(returncode=code, into_run_s=time.monotonic() - measuring_since,
                      uptime_s=server.uptime_s(), log_tail=server.log_tail(15),
                      log_path=str(server.log_path), memory_peak=watch.peak_recent if watch else None,
                      oom_killed=before is not None and after is not None and after > before)
