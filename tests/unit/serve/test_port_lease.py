"""Port leases: concurrent jobs never get the same port; a fixed port held elsewhere is refused."""

from __future__ import annotations

import socket

import pytest

from automodel_spec.errors import ServerError
from automodel_spec.serve.port_lease import is_bind_failure, lease_port


def test_a_leased_port_is_never_handed_out_again_until_released(tmp_path, monkeypatch):
    # the kernel may hand the same free port to two picks in a row: make it do so every time
    import automodel_spec.serve.port_lease as pl

    ports = iter([41001, 41001, 41001, 41002])
    monkeypatch.setattr(pl, "pick_port", lambda host, port: next(ports))
    with lease_port("127.0.0.1", 0, tmp_path) as first:
        with lease_port("127.0.0.1", 0, tmp_path) as second:
            assert (first, second) == (41001, 41002)


def test_a_free_port_is_leased_and_can_be_bound(tmp_path):
    with lease_port("127.0.0.1", 0, tmp_path) as port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_fixed_port_leased_by_another_job_is_refused_with_the_fix(tmp_path):
    with lease_port("127.0.0.1", 0, tmp_path) as port:
        with pytest.raises(ServerError, match=rf"sglang\.port={port} is held by another job.*sglang\.port=0"):
            with lease_port("127.0.0.1", port, tmp_path):
                pass
    with lease_port("127.0.0.1", port, tmp_path) as again:  # released: free to lease
        assert again == port


def test_bind_failures_are_recognized_in_a_log():
    assert is_bind_failure("ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 30000): "
                           "address already in use")
    assert is_bind_failure("RuntimeError: The server socket has failed to listen on any local network address. "
                           "port: 29500, useIpv6: 0, code: -98, name: EADDRINUSE, message: address already in use")
    assert not is_bind_failure("RuntimeError: CUDA out of memory")
