"""The SGLang server's whole life: start, wait until ready, log, and stop its entire process group.

SGLang's scheduler and detokenizer are child processes that can outlive a killed parent and keep
the GPU and the port, so the server runs in its own session and is always stopped as a group.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from automodel_spec.errors import ServerError
from automodel_spec.io.http_client import request_json
from automodel_spec.io.process_state import group_running
from automodel_spec.serve.command import format_command
from automodel_spec.serve.parent_watch import guarded_argv

READY_ENDPOINT = "/health_generate"
# the first wait between two health checks (then twice the last, up to the server's poll_interval_s)
FIRST_POLL_S = 0.1
_SECRET_FIELDS = ("api_key", "admin_api_key")


def pick_port(host: str, port: int) -> int:
    """``port`` if it is free on ``host``; a free one when ``port`` is 0.

    Raises:
        ServerError: the host is not an address of this machine, or the port is in use (or reserved).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if host:  # "" binds every interface
            socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:  # a name that resolves to nothing: no port is to blame
        why = getattr(exc, "strerror", None) or str(exc)
        raise ServerError(f"sglang.host={host} is not a host name or address this machine can resolve ({why}). "
                          "Give an address of this machine (127.0.0.1, the default; 0.0.0.0 for every "
                          "interface) or its name.") from exc
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a port whose last server left connections in TIME_WAIT is free to use;
        # a port another process listens on still fails to bind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServerError(_bind_problem(host, port, exc)) from exc
        return s.getsockname()[1]


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    """What a failed bind means, one message per cause (only EADDRINUSE is a port in use)."""
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"sglang.host={host} is not an address of this machine ({exc.strerror}): the server can only "
                "listen on its own addresses. Give one of them, 127.0.0.1 (the default) or 0.0.0.0 (every interface).")
    if exc.errno == errno.EACCES:
        return (f"sglang.port={port} on {host}: {exc.strerror} (ports below 1024 need privileges). Choose a port "
                "of 1024 or more, or sglang.port=0 to pick a free one.")
    return (f"sglang.port={port} on {host} is already in use ({exc.strerror}). Stop whatever holds it, "
            "choose another sglang.port, or set sglang.port=0 to pick a free one.")


class SGLangServer:
    """Run a server command as a context manager.

    ``with SGLangServer(argv, base_url, log_dir) as srv:`` starts the process in its own session,
    writes its output to ``log_dir/server.log`` (and to the console when ``echo``), waits for
    ``/health_generate`` while checking the process is alive, and on leaving (normally, on an
    exception, on Ctrl-C) stops the whole process group: SIGTERM, a bounded wait, then SIGKILL.
    ``poll_interval_s`` is the longest wait between two health checks: the first comes after
    ``FIRST_POLL_S`` and each wait doubles, so a server that is ready within a second (a small model,
    the tests' fake) is seen soon after, while one that boots for minutes is asked once a second.
    """

    def __init__(self, argv: list[str], base_url: str, log_dir: Path, *, ready_timeout_s: float = 900.0,
                 stop_timeout_s: float = 30.0, echo: bool = False, api_key: str | None = None,
                 env: dict | None = None, poll_interval_s: float = 1.0, log_name: str = "server.log"):
        self.argv = list(argv)
        self.base_url = base_url.rstrip("/")
        self.log_path = Path(log_dir) / log_name
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.echo = echo
        self.api_key = api_key
        self.env = env
        self.poll_interval_s = poll_interval_s
        self.proc: subprocess.Popen | None = None
        self.boot_s: float | None = None
        self._tail: deque[str] = deque(maxlen=60)
        self._pump: threading.Thread | None = None
        self._watches: list[tuple[Callable[[str], bool], threading.Event]] = []

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> SGLangServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Launch the process in a new session, its output piped to the log (and console)."""
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "w", buffering=1)
            log.write(f"# {format_command(self.argv)}\n")
        except OSError as exc:  # a full or read-only disk: said before any server starts
            raise ServerError(f"cannot write the server's log {self.log_path}: {exc.strerror or exc}. Free space "
                              "there, or give output_dir= a directory on a disk that can be written.") from exc
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if shutil.which(self.argv[0], path=env.get("PATH")) is None:
            log.close()
            raise ServerError(f"cannot start the server: {self.argv[0]} is not an executable file")
        try:  # SIGTERM to the server if we die without stopping it (SIGKILL included): no orphans
            self.proc = subprocess.Popen(guarded_argv(self.argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        except OSError as exc:
            log.close()
            raise ServerError(f"cannot start the server ({self.argv[0]}): {exc}") from exc
        self._started = time.monotonic()
        self._pump = threading.Thread(target=self._copy_output, args=(self.proc.stdout, log), daemon=True)
        self._pump.start()

    def _copy_output(self, stream, log) -> None:
        """Copy the server's output to its log (and the console) line by line, until it ends.

        A log that cannot be written (a full disk) is given up with a line saying so, kept in the tail:
        the output is still read to its end, since a server whose pipe is not drained blocks.
        """
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace")
                if self.api_key:
                    line = line.replace(self.api_key, "***")
                if log is not None:
                    try:
                        log.write(line)
                    except OSError as exc:
                        log = self._give_up_log(log, exc)
                self._tail.append(line.rstrip("\n"))
                for match, seen in self._watches:
                    if not seen.is_set() and match(line):
                        seen.set()
                if self.echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
        finally:
            if log is not None:
                try:
                    log.close()
                except OSError as exc:
                    self._give_up_log(None, exc)

    def _give_up_log(self, log, exc: OSError) -> None:
        """Note that the log could not be written (kept in the tail, where every report of the server
        looks); close it without its unwritten buffer."""
        self._tail.append(f"[automodel-spec] cannot write {self.log_path} ({exc.strerror or exc}): the server's "
                          "further output is not in it")
        if log is not None:
            try:
                log.close()
            except OSError:
                pass
        return None

    def watch_output(self, match: Callable[[str], bool]) -> threading.Event:
        """An event set once a line of the server's output satisfies ``match``; call before ``start``."""
        seen = threading.Event()
        self._watches.append((match, seen))
        return seen

    def wait_for(self, seen: threading.Event, timeout_s: float) -> bool:
        """Wait for an event of ``watch_output``: ``True`` when it was set, ``False`` when the process
        exited or ``timeout_s`` passed first (the caller goes on; ``wait_ready`` reports an exit)."""
        deadline = time.monotonic() + timeout_s
        while not seen.wait(0.1):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                return seen.is_set()
        return True

    def wait_ready(self) -> float:
        """Block until ``/health_generate`` answers; return the boot time in seconds.

        Raises:
            ServerError: the process exited during boot (with its exit code and last log lines),
                or it was not ready within ``ready_timeout_s`` (it is then stopped).
        """
        deadline = self._started + self.ready_timeout_s
        wait_s = min(FIRST_POLL_S, self.poll_interval_s)
        while True:
            code = self.proc.poll()
            if code is not None:
                self._join_pump()
                raise ServerError(
                    f"the server {_how_it_ended(code)} during startup, after "
                    f"{time.monotonic() - self._started:.1f}s. Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"the server was not ready within sglang.ready_timeout_s={self.ready_timeout_s:g}s and was "
                    f"stopped. Raise the timeout for large models. Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                request_json("GET", self.base_url + READY_ENDPOINT, timeout=max(5.0, self.poll_interval_s),
                             api_key=self.api_key)
            except Exception:
                time.sleep(wait_s)
                wait_s = min(wait_s * 2, self.poll_interval_s)
                continue
            self.boot_s = time.monotonic() - self._started
            return self.boot_s

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code once the server has exited by itself (negative: the signal that ended it), its
        output read to the end so that ``log_tail`` holds its last lines; ``None`` while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        self._join_pump()
        return self.proc.returncode

    def uptime_s(self) -> float:
        """Seconds since the server was started."""
        return time.monotonic() - self._started

    def wait(self) -> int:
        """Wait for the server to exit by itself (foreground serving); return its exit code."""
        code = self.proc.wait()
        self._join_pump()
        return code

    def stop(self) -> int | None:
        """Stop the whole process group and return the server's exit code (``None`` if never started).

        SIGTERM to the server first (SGLang then shuts its own children down), SIGTERM to the whole
        group after half of ``stop_timeout_s``, SIGKILL to the group once it has run out. Safe to
        call twice.
        """
        if self.proc is None:
            return None
        pgid = self.proc.pid  # the leader of its own session: pgid == pid
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                gone = self._wait_group_gone(pgid, self.stop_timeout_s / 2)
            else:  # the server died first: its orphaned children get no orders from it
                gone = not group_running(pgid)
            if not gone:
                _signal_group(pgid, signal.SIGTERM)
                if not self._wait_group_gone(pgid, self.stop_timeout_s / 2):
                    _signal_group(pgid, signal.SIGKILL)
                    self._wait_group_gone(pgid, 10.0)
        except KeyboardInterrupt:  # a second Ctrl-C while stopping: stop at once
            _signal_group(pgid, signal.SIGKILL)
            self._wait_group_gone(pgid, 10.0)
            raise
        self._join_pump()
        return self.proc.returncode

    def _wait_group_gone(self, pgid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.proc.poll()
            if self.proc.returncode is not None and not group_running(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _join_pump(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(list(self._tail)[-n:]) or "(no output)"

    # -- queries ---------------------------------------------------------------------------------
    def server_info(self) -> dict:
        """``/server_info`` (``/get_server_info`` on older releases), secrets removed."""
        try:
            info = request_json("GET", self.base_url + "/server_info", api_key=self.api_key)
        except Exception:
            info = request_json("GET", self.base_url + "/get_server_info", api_key=self.api_key)
        for key in _SECRET_FIELDS:
            if info.get(key):
                info[key] = "***"
        return info

    def generate(self, payload: dict, timeout: float = 600.0) -> dict:
        return request_json("POST", self.base_url + "/generate", payload, timeout=timeout, api_key=self.api_key,
                            json_only=True)

    def flush_cache(self) -> None:
        request_json("POST", self.base_url + "/flush_cache", timeout=60, api_key=self.api_key)


def _how_it_ended(code: int) -> str:
    """``exited with code N``, or the signal that ended it (SIGKILL: most often the kernel's OOM killer)."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    oom = (" (SIGKILL comes most often from the kernel's out-of-memory killer: loading the model may need more "
           "memory than this machine has free)") if code == -signal.SIGKILL else ""
    return f"was killed by {name}{oom}"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
