"""The launch wrapper that stops a server when its launcher dies (real processes, Linux only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from automodel_spec.parent_watch import guarded_argv, main
from automodel_spec.process_state import process_running

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def test_guarded_argv_runs_the_command_through_the_wrapper():
    assert guarded_argv(["srv", "--port", "1"], parent_pid=42) == \
        [sys.executable, "-m", "automodel_spec.parent_watch", "42", "srv", "--port", "1"]
    assert guarded_argv(["srv"])[3] == str(os.getpid())


def test_the_command_replaces_the_wrapper_and_keeps_its_exit_code():
    res = subprocess.run(guarded_argv([sys.executable, "-c", "import os, sys; print(os.getpid()); sys.exit(7)"]),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 7


def test_usage_errors_missing_program_and_a_parent_already_gone(capsys):
    assert main([]) == 2 and main(["x", "cmd"]) == 2 and main(["1"]) == 2
    assert "usage: python -m automodel_spec.parent_watch" in capsys.readouterr().err
    assert main([str(os.getppid()), "/nonexistent/program"]) == 127
    assert "cannot start the server (/nonexistent/program)" in capsys.readouterr().err
    assert main([str(os.getpid() + 10_000_000), "true"]) == 143  # not our parent: it died already


def test_the_command_gets_sigterm_when_its_launcher_is_sigkilled(tmp_path):
    pidfile = tmp_path / "server.pid"
    server = (f"import os, signal, sys, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
              "time.sleep(60)")
    launcher = ("import subprocess, sys, time; from automodel_spec.parent_watch import guarded_argv; "
                f"subprocess.Popen(guarded_argv([sys.executable, '-c', {server!r}]), start_new_session=True); "
                "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        deadline = time.monotonic() + 20
        while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        assert process_running(pid)
        proc.kill()  # SIGKILL: the launcher gets no chance to stop anything
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while process_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_running(pid), "the server outlived its SIGKILLed launcher"
    finally:
        proc.kill()
        if pidfile.is_file() and pidfile.read_text() and process_running(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
