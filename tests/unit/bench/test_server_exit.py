"""A server's exit during a benchmark in words (``bench/server_exit.py``): how, when, and the likely cause."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import automodel_spec.bench.server_exit as server_exit
from automodel_spec.bench.server_exit import MemoryWatch, ServerExit


def ended(returncode: int, tail: str = "", peak: float | None = None, oom: bool = False) -> ServerExit:
    return ServerExit(returncode=returncode, into_run_s=12.34, uptime_s=40.0, log_tail=tail, log_path="/x/server.log",
                      memory_peak=peak, oom_killed=oom)


@pytest.mark.parametrize(("how", "cause"), [
    (ended(-9, oom=True), r"out of memory: the kernel's OOM killer killed a process of this cgroup"),
    (ended(-9, peak=0.97), r"out of memory: the machine's memory was 97% in use just before"),
    (ended(-9, peak=0.40), r"killed from outside \(SIGKILL\): the OOM killer \(memory was 40% in use\)"),
    (ended(-9), r"killed from outside \(SIGKILL\): the OOM killer \(memory was not measured\)"),
    (ended(1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"), r"GPU out of memory: lower"),
    (ended(1, "RuntimeError: CUDA error: unspecified launch failure"), r"a GPU fault .*Xid"),
    (ended(-6, "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus"), r"a GPU fault"),
    (ended(1, "ncclSystemError: System call (e.g. socket, malloc) failed"), r"an NCCL failure"),
    (ended(1, "OSError: [Errno 28] No space left on device"), r"a full disk"),
    (ended(-15), r"ended by SIGTERM from outside the benchmark"),
    (ended(3, "ValueError: something"), r"it exited by itself: its last lines below say why"),
])
def test_the_likely_cause(how, cause):
    import re

    assert re.search(cause, how.likely_cause())


def test_the_message_names_signal_time_and_log():
    text = ended(-9, "line one\nline two", peak=0.99).message()
    assert text.startswith("the server was killed by SIGKILL during the benchmark, 12.3 s into it (40.0 s after it "
                           "started). Likely cause: out of memory")
    assert text.endswith("Last lines of /x/server.log:\nline one\nline two")
    assert ended(7).message().startswith("the server exited with code 7 during the benchmark")


def test_memory_in_use_takes_the_fuller_of_machine_and_cgroup(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n")
    usage, limit = tmp_path / "memory.current", tmp_path / "memory.max"
    monkeypatch.setattr(server_exit, "MEMINFO", meminfo)
    monkeypatch.setattr(server_exit, "CGROUP_USAGE", ((usage, limit),))
    assert server_exit.memory_in_use() == pytest.approx(0.6)  # no cgroup files
    usage.write_text("900\n")
    limit.write_text("max\n")
    assert server_exit.memory_in_use() == pytest.approx(0.6)  # no cgroup limit
    limit.write_text("1000\n")
    assert server_exit.memory_in_use() == pytest.approx(0.9)
    monkeypatch.setattr(server_exit, "MEMINFO", tmp_path / "missing")
    monkeypatch.setattr(server_exit, "CGROUP_USAGE", ())
    assert server_exit.memory_in_use() is None


def test_oom_kills_are_read_from_the_cgroup(tmp_path, monkeypatch):
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
    monkeypatch.setattr(server_exit, "CGROUP_EVENTS", (tmp_path / "missing", events))
    assert server_exit.oom_kills() == 2
    monkeypatch.setattr(server_exit, "CGROUP_EVENTS", (tmp_path / "missing",))
    assert server_exit.oom_kills() is None


def test_the_watch_keeps_the_fullest_recent_reading(monkeypatch):
    readings = iter([0.5, 0.98, 0.6] + [0.6] * 100)
    monkeypatch.setattr(server_exit, "memory_in_use", lambda: next(readings))
    with MemoryWatch(sample_s=0.01) as watch:
        time.sleep(0.05)
    assert watch.peak_recent == 0.98  # the last six readings hold it


class _Server:
    """What ``server_exit`` asks of an ``SGLangServer``, around a real process."""

    def __init__(self, proc):
        self.proc, self.log_path, self._started = proc, Path("/x/server.log"), time.monotonic()

    def exit_code(self):
        return self.proc.poll()

    def uptime_s(self):
        return time.monotonic() - self._started

    def log_tail(self, n=40):
        return "last words"


def test_a_process_killed_by_a_signal_is_reported_with_it():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = _Server(proc)
    since = time.monotonic()
    assert server_exit.server_exit(server, since, None) is None  # still running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone = server_exit.server_exit(server, since, None)
    assert gone.returncode == -9 and gone.signal_name() == "SIGKILL" and gone.log_tail == "last words"
