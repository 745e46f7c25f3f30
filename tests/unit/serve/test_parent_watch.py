"""The launch wrapper that stops a server when its launcher dies (real processes, Linux only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from automodel_spec.io.process_state import process_running
from automodel_spec.serve.parent_watch import guarded_argv, main

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def test_guarded_argv_runs_the_command_through_the_wrapper():
    assert guarded_argv(["srv", "--port", "1"], parent_pid=42) == \
        [sys.executable, "-m", "automodel_spec.serve.parent_watch", "42", "srv", "--port", "1"]
    assert guarded_argv(["srv"])[3] == str(os.getpid())


def test_the_wrapper_ends_with_the_commands_exit_code():
    res = subprocess.run(guarded_argv([sys.executable, "-c", "import os, sys; print(os.getpid()); sys.exit(7)"]),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 7


def test_usage_errors_missing_program_and_a_parent_already_gone(capsys):
    assert main([]) == 2 and main(["x", "cmd"]) == 2 and main(["1"]) == 2
    assert "usage: python -m automodel_spec.serve.parent_watch" in capsys.readouterr().err
    assert main([str(os.getppid()), "/nonexistent/program"]) == 127
    assert "cannot start the server (/nonexistent/program)" in capsys.readouterr().err
    assert main([str(os.getpid() + 10_000_000), "true"]) == 143  # not our parent: it died already


def test_the_command_gets_sigterm_when_its_launcher_is_sigkilled(tmp_path):
    pidfile = tmp_path / "server.pid"
    server = (f"import os, signal, sys, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
              "time.sleep(60)")
    launcher = ("import subprocess, sys, time; from automodel_spec.serve.parent_watch import guarded_argv; "
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


def _wait_file(path, timeout=20.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text().strip()


def test_a_server_killed_by_a_signal_reads_the_same_to_its_launcher():
    proc = subprocess.run(guarded_argv([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]),
                          start_new_session=True, timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigterm_to_the_wrapper_reaches_the_server(tmp_path):
    ready = tmp_path / "ready"
    server = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(43))\n"
              f"open({str(ready)!r}, 'w').write('up')\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen(guarded_argv([sys.executable, "-c", server]), start_new_session=True)
    try:
        assert _wait_file(ready) == "up"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 43  # the server's own handler ran
    finally:
        proc.kill()


def test_what_the_server_leaves_behind_in_its_group_is_stopped_when_it_exits(tmp_path):
    # a worker that ignores SIGTERM and outlives the server that started it (as an SGLang
    # detokenizer once outlived a SIGTERM'd sweep): the wrapper kills it after its grace time
    pidfile = tmp_path / "worker.pid"
    worker = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
    server = ("import os, subprocess, sys, time\n"
              f"subprocess.Popen([sys.executable, '-c', {worker!r}])\n"
              f"while not (os.path.exists({str(pidfile)!r}) and open({str(pidfile)!r}).read()):\n"
              "    time.sleep(0.05)\n"
              "sys.exit(3)\n")
    t0 = time.monotonic()
    res = subprocess.run(guarded_argv([sys.executable, "-c", server]), start_new_session=True, timeout=60,
                         capture_output=True, text=True)
    worker_pid = int(_wait_file(pidfile))
    try:
        assert res.returncode == 3
        assert not process_running(worker_pid), "the server's worker outlived it"
        assert "left 1 process(es) behind" in res.stderr
        assert 4 < time.monotonic() - t0 < 30  # SIGTERM was ignored: SIGKILL after the grace time
    finally:
        if process_running(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def test_a_wrapper_that_does_not_lead_its_group_sweeps_nothing(tmp_path):
    # run in the test's own process group: sweeping it would kill pytest
    res = subprocess.run(guarded_argv([sys.executable, "-c", "print('ok')"]), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.strip() == "ok" and "behind" not in res.stderr
