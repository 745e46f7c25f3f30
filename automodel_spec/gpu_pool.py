"""Lease GPUs to the jobs of a sweep running side by side on one host, so no two share a GPU.

Each job takes ``count`` GPUs (``sglang.tp_size``) out of the host's pool for its server's whole
life: one lock file per GPU, held with ``flock`` (released by the kernel when the holder dies, even
by SIGKILL). A job takes all its GPUs at once or none and tries again (never holding some while
waiting for others, so two tensor-parallel jobs cannot deadlock). The locks live in a directory of
this host and user (``lease_dir``): GPU indices mean nothing on another host, so a sweep directory
shared by the nodes of a cluster would be the wrong place.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from automodel_spec import nvidia_smi
from automodel_spec.errors import ConfigError

LOCK_DIR_ENV = "AUTOMODEL_SPEC_LOCK_DIR"
log = logging.getLogger(__name__)


def lease_dir() -> Path:
    """Where this host's GPU and port leases live: ``$AUTOMODEL_SPEC_LOCK_DIR``, else a directory of
    this user's under the system's temporary directory (``/tmp/automodel_spec-UID/leases``)."""
    explicit = os.environ.get(LOCK_DIR_ENV)
    if explicit:
        path = Path(explicit).expanduser()
    else:
        uid = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
        path = Path(tempfile.gettempdir()) / f"automodel_spec-{uid}" / "leases"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def visible_gpus(explicit: list[str] | None = None, env: Mapping[str, str] | None = None
                 ) -> tuple[list[str] | None, str]:
    """The GPUs this host's jobs share, and where that list came from.

    ``explicit`` (``bench.gpu_pool``) first, then ``CUDA_VISIBLE_DEVICES`` (as a cluster scheduler
    sets it for a job), then every GPU ``nvidia-smi`` lists; ``None`` when none of them says.
    """
    env = os.environ if env is None else env
    if explicit is not None:
        return [str(g) for g in explicit], f"bench.gpu_pool={list(explicit)}"
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()], f"CUDA_VISIBLE_DEVICES={visible}"
    indices = nvidia_smi.gpu_indices()
    if indices:
        return indices, "nvidia-smi"
    return None, "no GPU found"


def check_pool_size(pool: list[str], count: int, source: str, what: str | None = None) -> None:
    """Raise a ``ConfigError`` when ``pool`` cannot give one server ``count`` GPUs.

    ``what`` names the setting that asks for them (default ``sglang.tp_size=<count>``).
    """
    if count > len(pool):
        raise ConfigError(f"{what or f'sglang.tp_size={count}'} needs {count} GPU(s) on this host for one server; "
                          f"it offers {len(pool)} ({source}). Lower sglang.tp_size, or list more GPUs in "
                          "bench.gpu_pool or CUDA_VISIBLE_DEVICES.")


@contextmanager
def lease_gpus(pool: list[str], count: int, lock_dir: Path, *, source: str = "the pool",
               poll_s: float = 0.5) -> Iterator[list[str]]:
    """Hold ``count`` GPUs of ``pool`` for the ``with`` block; yield their ids (in pool order).

    Waits, without holding any, while other jobs hold too many of them.

    Raises:
        ConfigError: the pool has fewer than ``count`` GPUs.
    """
    check_pool_size(pool, count, source)
    names = _lock_names(pool)
    told = False
    while True:
        stack = ExitStack()
        taken = []
        for gpu in pool:
            lock = FileLock(str(lock_dir / f"gpu-{names[gpu]}.lock"), thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            stack.callback(lock.release)
            taken.append(gpu)
            if len(taken) == count:
                break
        if len(taken) == count:
            break
        stack.close()  # all or none: never wait while holding some
        if not told:
            log.info("[gpu] waiting for %d of the GPUs %s (%s) to be free of other jobs", count, ",".join(pool), source)
            told = True
        time.sleep(poll_s)
    with stack:
        yield taken


def pinned_env(gpus: list[str] | None, env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The server's environment with ``CUDA_VISIBLE_DEVICES`` set to ``gpus`` (``None``: unchanged).

    GPU indices are numbered as ``nvidia-smi`` numbers them (PCI bus order), unless the caller
    chose another ``CUDA_DEVICE_ORDER``; CUDA's own default order can differ on mixed machines.
    """
    if gpus is None:
        return None
    out = dict(os.environ if env is None else env)
    out["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    out.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return out


def _lock_names(pool: list[str]) -> dict[str, str]:
    """One lock name per physical GPU: its UUID where ``nvidia-smi`` maps the index, so a job given
    ``0`` and one given ``GPU-...`` for the same card exclude each other."""
    uuids = nvidia_smi.gpu_uuids() if any(not g.startswith(("GPU-", "MIG-")) for g in pool) else {}
    return {g: re.sub(r"[^A-Za-z0-9_.-]", "_", uuids.get(g, g)) for g in pool}


def parallel_jobs(tp_size: int, explicit: list[str] | None = None) -> int:
    """How many servers of ``tp_size`` GPUs this host runs at once: the pool's GPUs // ``tp_size``
    (at least 1; 1 where no GPU is found)."""
    pool, _ = visible_gpus(list(explicit) if explicit is not None else None)
    return max(1, len(pool or []) // max(1, int(tp_size)))
