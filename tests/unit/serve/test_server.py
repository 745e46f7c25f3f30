"""SGLangServer's life with the fake server: ready, slow boot, crash, hang, stubborn children, stop.

The fake (tests/fakes/fake_sglang.py) is started exactly as SGLang would be, ``fake -m
sglang.launch_server --port P ...``, and like SGLang it spawns a child ("scheduler") into the same
process group. It writes "serverpid childpid" to FAKE_SGLANG_PIDFILE, so every test can check that
no process of the group survives. The ``launch`` fixture SIGKILLs whatever a failing test leaves.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import is_fake_server

from automodel_spec.errors import ServerError
from automodel_spec.io.http_client import HTTPStatusError, request_json
from automodel_spec.io.process_state import process_running
from automodel_spec.serve import server as server_module
from automodel_spec.serve.server import SGLangServer, pick_port

FAKE = Path(__file__).resolve().parents[2] / "fakes" / "fake_sglang.py"
GENERATE = {"input_ids": [3, 4, 5], "sampling_params": {"max_new_tokens": 8, "temperature": 0.0}}

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process-group checks use /proc")


def _read_pids(pidfile: Path, timeout: float = 10.0) -> list[int]:
    """The server's and its child's pids, once the fake has written them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = pidfile.read_text()
        except FileNotFoundError:
            text = ""
        if text.endswith("\n"):
            return [int(p) for p in text.split()]
        time.sleep(0.05)
    raise AssertionError(f"the fake wrote no pids to {pidfile} within {timeout}s")


def _assert_all_gone(pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(process_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if process_running(p)]
    assert not left, f"processes of the server group still running: {left}"


class Launched:
    def __init__(self, server: SGLangServer, pidfile: Path, port: int):
        self.server, self.pidfile, self.port = server, pidfile, port

    def pids(self) -> list[int]:
        return _read_pids(self.pidfile)


@pytest.fixture
def launch(tmp_path):
    """Factory for a not-yet-started fake server; kills every process it may have left on teardown."""
    made: list[Launched] = []

    def make(mode: str = "ok", *, boot_s: float | None = None, extra: tuple[str, ...] = (),
             env: dict | None = None, **kwargs) -> Launched:
        port = pick_port("127.0.0.1", 0)
        pidfile = tmp_path / f"pids-{len(made)}.txt"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_SGLANG_")}
        full_env.update(FAKE_SGLANG_MODE=mode, FAKE_SGLANG_PIDFILE=str(pidfile), **(env or {}))
        if boot_s is not None:
            full_env["FAKE_SGLANG_BOOT_S"] = str(boot_s)
        argv = [str(FAKE), "-m", "sglang.launch_server", "--host", "127.0.0.1", "--port", str(port), *extra]
        kwargs.setdefault("ready_timeout_s", 30.0)
        kwargs.setdefault("stop_timeout_s", 4.0)
        kwargs.setdefault("poll_interval_s", 0.1)
        server = SGLangServer(argv, f"http://127.0.0.1:{port}", tmp_path / f"logs-{len(made)}", env=full_env,
                              **kwargs)
        made.append(Launched(server, pidfile, port))
        return made[-1]

    yield make
    for item in made:
        proc = item.server.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)
        if item.pidfile.exists():
            for pid in item.pidfile.read_text().split():
                if process_running(int(pid)) and is_fake_server(int(pid)):
                    os.kill(int(pid), signal.SIGKILL)


# --- ready, slow boot -----------------------------------------------------------------------------


def test_ready_path_records_boot_time_writes_log_and_stops_the_group(launch):
    fake = launch("ok")
    srv = fake.server
    with srv as entered:
        assert entered is srv
        assert srv.alive()
        assert srv.boot_s is not None and 0 < srv.boot_s < 30
        pids = fake.pids()
        assert len(pids) == 2 and all(process_running(p) for p in pids)
        # SGLang's children share the server's process group: stop() reaches them through it.
        assert {os.getpgid(p) for p in pids} == {srv.proc.pid}
        info = srv.server_info()
        assert info["version"] == "fake"
        assert "api_key" in info and not info["api_key"]  # no key: nothing to mask
        out = srv.generate(GENERATE, timeout=10)
        assert out["meta_info"]["completion_tokens"] == 8
        srv.flush_cache()
    assert not srv.alive()
    _assert_all_gone(pids)
    log = srv.log_path.read_text()
    assert srv.log_path.name == "server.log"
    first = log.splitlines()[0]
    assert first.startswith("# ") and "sglang.launch_server" in first and f"--port {fake.port}" in first
    assert "booting on port" in log and "fired up and ready to roll" in log
    assert "fired up and ready to roll" in srv.log_tail()


def test_slow_boot_still_becomes_ready(launch):
    fake = launch("ok", boot_s=2)
    with fake.server as srv:
        assert srv.boot_s >= 2.0
        assert srv.boot_s < 20
        pids = fake.pids()
    _assert_all_gone(pids)


# --- failures at boot -----------------------------------------------------------------------------


def test_crash_at_boot_is_reported_within_seconds_with_exit_code_and_log_tail(launch):
    fake = launch("crash")
    t0 = time.monotonic()
    with pytest.raises(ServerError) as excinfo:
        with fake.server:
            pytest.fail("a crashed server must not be entered")
    elapsed = time.monotonic() - t0
    msg = str(excinfo.value)
    assert elapsed < 10, f"the crash took {elapsed:.1f}s to be reported"
    assert "exited with code 3 during startup" in msg
    assert "CUDA out of memory" in msg
    assert str(fake.server.log_path) in msg
    assert fake.server.proc.returncode == 3
    _assert_all_gone(fake.pids())


def test_a_kill_at_boot_names_the_signal_and_the_oom_killer(launch):
    fake = launch("killed")
    with pytest.raises(ServerError) as excinfo:
        with fake.server:
            pytest.fail("a killed server must not be entered")
    msg = str(excinfo.value)
    assert "the server was killed by SIGKILL (SIGKILL comes most often from the kernel's out-of-memory killer" in msg
    assert "during startup" in msg and "Load weight begin" in msg
    _assert_all_gone(fake.pids())


def test_hang_times_out_and_leaves_no_process(launch):
    fake = launch("hang", ready_timeout_s=3, stop_timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(ServerError) as excinfo:
        with fake.server:
            pytest.fail("a server that never becomes ready must not be entered")
    elapsed = time.monotonic() - t0
    msg = str(excinfo.value)
    assert "not ready within sglang.ready_timeout_s=3s" in msg and "stopped" in msg
    assert "booting on port" in msg  # the log tail
    assert 3 <= elapsed < 3 + 2 + 8, f"gave up after {elapsed:.1f}s"
    assert not fake.server.alive()
    _assert_all_gone(fake.pids())


def test_unstartable_command_raises_server_error(tmp_path):
    srv = SGLangServer([str(tmp_path / "no-such-python"), "-m", "sglang.launch_server"], "http://127.0.0.1:1",
                       tmp_path, ready_timeout_s=2)
    with pytest.raises(ServerError, match="cannot start the server"):
        with srv:
            pass
    assert srv.stop() is None


# --- stopping -------------------------------------------------------------------------------------


def test_stubborn_child_is_sigkilled_within_stop_timeout(launch):
    stop_timeout = 2.0
    fake = launch("stubborn_child", stop_timeout_s=stop_timeout)
    srv = fake.server
    srv.__enter__()
    server_pid, child_pid = fake.pids()
    assert os.getpgid(child_pid) == srv.proc.pid
    t0 = time.monotonic()
    srv.stop()
    elapsed = time.monotonic() - t0
    # The child ignores SIGTERM, so stop() had to go all the way to SIGKILL of the group...
    assert elapsed >= stop_timeout * 0.9, f"stop() returned after {elapsed:.2f}s, before escalating"
    # ...and did so within its bound (plus a margin for a loaded machine).
    assert elapsed < stop_timeout + 5, f"stop() took {elapsed:.1f}s"
    _assert_all_gone([server_pid, child_pid], timeout=1.0)


def test_stop_waits_for_the_last_thread_of_a_dying_child(launch):
    # A dying multi-threaded process can show a zombie main thread while another thread still
    # releases what it holds (an SGLang scheduler: its GPU memory). It is not gone yet.
    fake = launch("lingering_child", env={"FAKE_SGLANG_LINGER_S": "1.5"})
    srv = fake.server
    srv.__enter__()
    _, child_pid = fake.pids()
    srv.stop()
    assert not process_running(child_pid), "stop() returned while a thread of the server's child still ran"


def test_exception_inside_with_block_stops_everything(launch):
    fake = launch("ok")
    with pytest.raises(RuntimeError, match="boom"):
        with fake.server:
            pids = fake.pids()
            raise RuntimeError("boom")
    assert not fake.server.alive()
    _assert_all_gone(pids)


def test_keyboard_interrupt_inside_with_block_stops_everything(launch):
    fake = launch("ok")
    with pytest.raises(KeyboardInterrupt):
        with fake.server:
            pids = fake.pids()
            raise KeyboardInterrupt
    _assert_all_gone(pids)


def test_health_checks_come_quickly_at_first_then_once_per_poll_interval(tmp_path, monkeypatch):
    """A server ready within a second is seen soon after; one that boots for minutes is asked once a second."""
    srv = SGLangServer([str(FAKE)], "http://127.0.0.1:1", tmp_path, poll_interval_s=1.0)
    srv.proc, srv._started = SimpleNamespace(poll=lambda: None), time.monotonic()  # a server still booting
    answers = iter([False] * 6 + [True])  # not ready six times, then ready

    def health(*args, **kwargs):
        if not next(answers):
            raise ConnectionRefusedError("not listening yet")
        return {}

    waits: list[float] = []
    monkeypatch.setattr(server_module, "request_json", health)
    monkeypatch.setattr(server_module, "time", SimpleNamespace(monotonic=time.monotonic, sleep=waits.append))
    srv.wait_ready()
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_stop_twice_is_safe_and_stop_before_start_is_a_no_op(launch, tmp_path):
    never = SGLangServer([str(FAKE)], "http://127.0.0.1:1", tmp_path / "never")
    assert never.stop() is None
    assert not never.alive()

    fake = launch("ok")
    srv = fake.server
    srv.__enter__()
    pids = fake.pids()
    first = srv.stop()
    t0 = time.monotonic()
    second = srv.stop()
    assert time.monotonic() - t0 < 2
    assert first == second == 0  # the fake exits 0 on SIGTERM
    srv.__exit__(None, None, None)  # leaving the block after an explicit stop() is safe too
    _assert_all_gone(pids)


def test_server_exiting_by_itself_gives_its_exit_code(launch):
    fake = launch("exit_after", env={"FAKE_SGLANG_EXIT_AFTER_S": "1"})
    with fake.server as srv:
        pids = fake.pids()
        assert srv.wait() == 7
        assert not srv.alive()
    assert srv.stop() == 7
    _assert_all_gone(pids)


# --- ports ----------------------------------------------------------------------------------------


def test_port_in_use_is_reported_with_the_port_and_the_way_out():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServerError) as excinfo:
            pick_port("127.0.0.1", port)
    msg = str(excinfo.value)
    assert f"sglang.port={port}" in msg and "already in use" in msg
    assert "sglang.port=0" in msg


def test_port_zero_picks_a_free_port():
    port = pick_port("127.0.0.1", 0)
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))  # it is indeed free
    assert pick_port("127.0.0.1", port) == port  # and a free port given explicitly is kept


# --- api key --------------------------------------------------------------------------------------


def test_api_key_is_sent_masked_in_server_info_and_never_logged(launch, capsys):
    key = "sk-test-0123456789-secret"
    fake = launch("ok", extra=("--api-key", key), api_key=key, echo=True)
    with fake.server as srv:
        pids = fake.pids()
        # The fake enforces the key: requests without it are refused, ours are authorized.
        with pytest.raises(HTTPStatusError) as excinfo:
            request_json("GET", srv.base_url + "/server_info", timeout=5)
        assert excinfo.value.status == 401
        with pytest.raises(HTTPStatusError):
            request_json("GET", srv.base_url + "/server_info", timeout=5, api_key="wrong")
        info = srv.server_info()
        assert info["api_key"] == "***"
        assert srv.generate(GENERATE, timeout=10)["meta_info"]["completion_tokens"] == 8
    _assert_all_gone(pids)
    log = srv.log_path.read_text()
    assert key not in log
    assert "server_args api_key=***" in log  # the fake printed the key at boot; the log masks it
    assert "--api-key" in log.splitlines()[0]  # the command line is logged, its secret masked
    assert key not in srv.log_tail(1000)
    echoed = capsys.readouterr().out
    assert "server_args api_key=***" in echoed and key not in echoed


def test_a_watched_line_of_the_output_is_seen_and_an_exit_ends_the_wait(tmp_path):
    """What ``bench/placement.py`` waits on before the next server on a shared GPU starts."""
    script = "import sys, time; print('loading', flush=True); time.sleep(0.3); print('Capture cuda graph begin', flush=True); time.sleep(30)"
    srv = SGLangServer([sys.executable, "-c", script], "http://127.0.0.1:1", tmp_path / "a", stop_timeout_s=2)
    seen = srv.watch_output(lambda line: "graph begin" in line)
    srv.start()
    try:
        assert srv.wait_for(seen, timeout_s=20) and srv.proc.poll() is None
    finally:
        srv.stop()
    quits = SGLangServer([sys.executable, "-c", "print('loading')"], "http://127.0.0.1:1", tmp_path / "b")
    never = quits.watch_output(lambda line: "graph begin" in line)
    quits.start()
    t0 = time.monotonic()
    assert not quits.wait_for(never, timeout_s=60) and time.monotonic() - t0 < 10  # ended by the exit
    quits.wait()
