"""Lease GPUs to the jobs of a sweep running side by side on one host, so no two share a GPU.

Each job takes ``count`` GPUs (``sglang.tp_size``) out of the host's pool for its server's whole
life: one lock file per GPU, held with ``flock`` (released by the kernel when the holder dies, even
by SIGKILL). A job takes all its GPUs at once or none and tries again (never holding some while
waiting for others, so two tensor-parallel jobs cannot deadlock). The locks live in a directory of
this host and user (``lease_dir``): GPU indices mean nothing on another host, so a sweep directory
shared by the nodes of a cluster would be the wrong place.

A GPU may also be shared by up to ``share`` servers (``bench.servers_per_gpu``): small models leave
most of a large GPU idle, and a server's start (seconds to minutes of kernel compilation and CUDA graph
capture) is most of a sweep point's time. Sharers take the GPU's lock shared and one of its ``share``
slots; a job that wants the GPU alone takes it exclusive, so the two kinds never mix. ``gpu_phase``
then keeps the measurements honest: starting and stopping servers hold a GPU's phase lock shared, a
measurement holds it exclusive, so a measurement runs beside idle servers only.
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

from automodel_spec.errors import ConfigError
from automodel_spec.io import nvidia_smi
from automodel_spec.io.file_lock import flock_held
from automodel_spec.io.process_state import process_running

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
               poll_s: float = 0.5, share: int = 1) -> Iterator[list[str]]:
    """Hold ``count`` GPUs of ``pool`` for the ``with`` block; yield their ids (in pool order).

    Waits, without holding any, while other jobs hold too many of them.

    Args:
        share: how many holders one GPU takes at once (``bench.servers_per_gpu``); 1: the GPU alone.

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
            held = _try_gpu(lock_dir, names[gpu], share)
            if held is None:
                continue
            stack.enter_context(held)
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


def _try_gpu(lock_dir: Path, name: str, share: int) -> ExitStack | None:
    """The locks that give one GPU to the caller now (alone, or one of ``share`` slots), else ``None``."""
    held = _try_flock(lock_dir / f"gpu-{name}.lock", shared=share > 1)
    if held is None or share <= 1:
        return held
    for slot in range(share):
        slot_held = _try_flock(lock_dir / f"gpu-{name}.slot{slot}.lock", shared=False)
        if slot_held is not None:
            held.enter_context(slot_held)
            return held
    held.close()
    return None


def _try_flock(path: Path, *, shared: bool) -> ExitStack | None:
    """``path`` locked now (shared or exclusive), to be released by closing the stack; ``None`` when taken."""
    held = ExitStack()
    if held.enter_context(flock_held(path, shared=shared, blocking=False)):
        return held
    held.close()
    return None


def gpu_lock_names(gpus: list[str]) -> list[str]:
    """The lock name of each of ``gpus`` (its UUID where ``nvidia-smi`` maps the index): asked once per
    server, and given to ``gpu_phase``, ``registered_server`` and ``sharing_groups``."""
    names = _lock_names(gpus)
    return [names[g] for g in gpus]


@contextmanager
def gpu_phase(names: list[str], lock_dir: Path, *, exclusive: bool, poll_s: float = 0.2) -> Iterator[None]:
    """Hold the phase lock of the GPUs named ``names`` (``gpu_lock_names``): shared to start or stop a
    server, exclusive to measure.

    Measurements go first: a start waits while a ready server waits to be measured (its mark in the
    GPU's queue), so the GPU never sits idle with ready servers while another one starts (starts are
    what take long). The locks are taken in one global order (by lock name), so two jobs that each want
    several GPUs cannot hold one each and wait for the other's.
    """
    with ExitStack() as stack:
        for name in sorted(set(names)):
            lock = lock_dir / f"gpu-{name}.phase.lock"
            queue = lock_dir / f"gpu-{name}.measure-queue"
            if exclusive:
                queue.mkdir(parents=True, exist_ok=True)
                mark = queue / str(os.getpid())
                mark.touch()
                try:
                    stack.enter_context(flock_held(lock, shared=False))
                finally:
                    mark.unlink(missing_ok=True)
                continue
            while True:
                held = None if _measurements_waiting(queue) else _try_flock(lock, shared=True)
                if held is not None:
                    break
                time.sleep(poll_s)
            stack.enter_context(held)
        yield


@contextmanager
def gpu_sizing(names: list[str], lock_dir: Path) -> Iterator[None]:
    """Hold the sizing lock of the GPUs named ``names``: one sharing server at a time loads its weights
    and sizes its memory there (``bench/placement.py`` holds it until the server says it has). Taken
    in the same global order as ``gpu_phase``."""
    with ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(flock_held(lock_dir / f"gpu-{name}.sizing.lock", shared=False))
        yield


def _measurements_waiting(queue: Path) -> bool:
    """A live process waits in ``queue`` for the exclusive phase (the mark of a killed one is ignored)."""
    if not queue.is_dir():
        return False
    return any(p.name.isdigit() and process_running(int(p.name)) for p in queue.iterdir())


@contextmanager
def registered_server(names: list[str], lock_dir: Path, pgid: int) -> Iterator[None]:
    """Mark the server process group ``pgid`` as a sharer of the GPUs named ``names`` (``sharing_groups``)
    while in the block."""
    marks = []
    try:
        for name in names:
            mark = lock_dir / f"gpu-{name}.servers" / str(pgid)
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()
            marks.append(mark)
        yield
    finally:
        for mark in marks:
            mark.unlink(missing_ok=True)


def sharing_groups(names: list[str], lock_dir: Path) -> set[int]:
    """The process groups of the servers marked as sharers of the GPUs named ``names`` (a mark left by a
    killed job names a group that no longer runs: it matches nothing)."""
    groups = set()
    for name in names:
        folder = lock_dir / f"gpu-{name}.servers"
        if folder.is_dir():
            groups.update(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    return groups


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


def parallel_jobs(tp_size: int, explicit: list[str] | None = None, share: int = 1) -> int:
    """How many servers of ``tp_size`` GPUs this host runs at once: the pool's GPUs x ``share`` //
    ``tp_size`` (at least 1; 1 where no GPU is found)."""
    pool, _ = visible_gpus(list(explicit) if explicit is not None else None)
    return max(1, len(pool or []) * max(1, int(share)) // max(1, int(tp_size)))
