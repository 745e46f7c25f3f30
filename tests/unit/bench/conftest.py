"""A real fake SGLang server (``tests/fakes/fake_sglang.py``) over HTTP for the client's streaming and load tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from automodel_spec.serve.server import SGLangServer, pick_port

FAKE = Path(__file__).resolve().parents[2] / "fakes" / "fake_sglang.py"


@pytest.fixture
def fake_server(tmp_path):
    """Factory: ``fake_server(*argv, env={...})`` starts the fake with those launch arguments, waits until it is
    ready and returns its ``SGLangServer``; every server is stopped on teardown."""
    started: list[SGLangServer] = []

    def start(*argv: str, env: dict | None = None) -> SGLangServer:
        port = pick_port("127.0.0.1", 0)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_SGLANG_")}
        full_env.update(FAKE_SGLANG_BOOT_S="0.1", **(env or {}))
        server = SGLangServer([str(FAKE), "-m", "sglang.launch_server", "--host", "127.0.0.1", "--port", str(port),
                               *argv], f"http://127.0.0.1:{port}", tmp_path / f"server-{len(started)}", env=full_env,
                              ready_timeout_s=30.0, stop_timeout_s=4.0, poll_interval_s=0.05)
        started.append(server)
        server.start()
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
