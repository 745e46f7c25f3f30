"""Give each concurrent job its own server port, without a race between them.

``pick_port`` finds a port free at that moment, but the server binds it only seconds later:
two jobs picking at once can be handed the same port, and the second server then fails to bind
after loading its model. So the chosen port is also leased: a lock file per port, held until the
server is stopped, and a job that finds the port leased picks another. That closes the race
between jobs of ours on this host. A process of someone else can still take the port in between
(e.g. an outgoing connection given it as its ephemeral port); no lock of ours can stop that, so a
server that exits at startup because its address was in use is started again on another port
(``is_bind_failure``) -- and SGLang's own internal ports (NCCL, ZMQ) are covered by the same retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from automodel_spec.errors import ServerError
from automodel_spec.io.file_lock import file_lock_if_free
from automodel_spec.serve.server import pick_port

_PICKS = 100
_BIND_FAILURES = ("address already in use", "eaddrinuse", "errno 98")


@contextmanager
def lease_port(host: str, port: int, lock_dir: Path) -> Iterator[int]:
    """Hold a port for the ``with`` block: ``port``, or a free one when ``port`` is 0.

    Raises:
        ServerError: a fixed ``port`` is in use or leased by another job, or no free port was found.
    """
    for _ in range(_PICKS):
        chosen = pick_port(host, port)
        with file_lock_if_free(lock_dir / f"port-{chosen}.lock") as held:
            if not held:
                if port:
                    raise ServerError(f"sglang.port={port} is held by another job of automodel-spec on this host. "
                                      "Jobs that run side by side need ports of their own: set sglang.port=0.") from None
                continue  # another job's server is about to bind it
            yield chosen
        return
    raise ServerError(f"no free port on {host} that no other job holds after {_PICKS} tries.")


def is_bind_failure(log_text: str) -> bool:
    """Whether a server's last log lines say that it could not bind an address."""
    text = log_text.lower()
    return any(marker in text for marker in _BIND_FAILURES)
