"""Where a benchmark point's server runs: its own GPUs, its own port, and nothing else on them.

Jobs of a sweep may run side by side (Hydra's joblib launcher, several SLURM jobs on one node),
so each server is started on GPUs leased for its whole life (``gpu_pool``), with
``CUDA_VISIBLE_DEVICES`` set to them, on a leased port (``port_lease``), after waiting for the
processes already on *those* GPUs to leave. A server that could not bind its address is started
again on another port, at most ``PORT_ATTEMPTS`` times.

With ``bench.servers_per_gpu`` above 1, that many servers share a GPU: they start side by side, and
each is measured alone (``gpu_pool.gpu_phase``): its measurement never overlaps another server's
start, stop or measurement, only other servers sitting idle. Their starts overlap only once each has
sized its memory (``memory_sized``): SGLang gives the KV cache what is free after the weights are
loaded, less a share of what was free when the server started, so two servers loading at once count
each other's weights as their own (one H100, 2026-12-06: two 8B-shaped servers started in the same
second and both failed with "Loaded weights leave no GPU memory for the KV cache"). For the same reason a
server whose ``sglang.mem_fraction_static`` of the memory its sharers left cannot hold its weights would die
at start-up (one H100, 2026-12-07: 0.26 of 41 GB for 14.6 GB of weights): it waits for a sharer to stop, or,
with none to wait for, fails before it starts (``wait_for_room``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from automodel_spec.bench.point import BenchPoint
from automodel_spec.errors import ServerError
from automodel_spec.io import nvidia_smi
from automodel_spec.io.process_state import group_running, process_group
from automodel_spec.launch import open_server
from automodel_spec.prepare import PreparedRun
from automodel_spec.serve.gpu_pool import (
    gpu_lock_names,
    gpu_phase,
    gpu_sizing,
    lease_dir,
    lease_gpus,
    pinned_env,
    registered_server,
    sharing_groups,
    visible_gpus,
)
from automodel_spec.serve.port_lease import is_bind_failure, lease_port
from automodel_spec.serve.server import SGLangServer

PORT_ATTEMPTS = 3
log = logging.getLogger(__name__)

# How long a server sharing a GPU may take to size its memory before the next one starts anyway
# (its start then fails or its KV cache is small: both are reported, neither is silent).
SIZING_WAIT_S = 600.0


def memory_sized(line: str) -> bool:
    """A line SGLang writes after its weights and memory pools are in place: the first CUDA-graph
    capture (0.5.17: "Capture cuda graph begin", "Capture target verify CUDA graph begin"; every release
    the project knows captures after allocating), or readiness itself where graphs are disabled."""
    low = line.lower()
    return ("capture" in low and "graph begin" in low) or "ready to roll" in low


@dataclass
class Placement:
    """A ready server and where it runs.

    Attributes:
        server: started and answering ``/health_generate``.
        gpus: the GPUs leased to it (``None``: no GPU found, not pinned).
        others: processes found on those GPUs after the wait (they share the measurement).
        idle_servers: servers of other points that sat idle on those GPUs during the measurement
            (``bench.servers_per_gpu``).
    """

    server: SGLangServer
    gpus: list[str] | None = None
    others: list[str] = field(default_factory=list)
    idle_servers: int = 0


@contextmanager
def placed_server(cfg: BenchPoint, run: PreparedRun, out_dir: Path, *, log_name: str = "server.log"
                  ) -> Iterator[Placement]:
    """Start the point's server on leased GPUs and port; stop it and release both on leaving.

    Raises:
        ConfigError: the host has fewer GPUs than ``sglang.tp_size``.
        ServerError: the server did not start (after ``PORT_ATTEMPTS`` tries when it could not bind).
    """
    pool, source = visible_gpus(cfg.bench.gpu_pool)
    locks = lease_dir()
    share = cfg.bench.servers_per_gpu
    with ExitStack() as stack:
        gpus = None
        if pool is not None:
            gpus = stack.enter_context(lease_gpus(pool, cfg.sglang.tp_size, locks, source=source, share=share))
        sharing = gpus is not None and share > 1
        names = gpu_lock_names(gpus) if sharing else []
        # sharers never leave (they are the sweep's other points): nothing to wait for
        others = [] if sharing else wait_for_gpu_processes(cfg.bench.gpu_free_wait_s, gpus)
        if others:  # they share the GPU's time and memory with the measurement
            log.warning("[bench] warning: other processes use the GPU; numbers may be off: %s", "; ".join(others))
        env = pinned_env(gpus)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port_stack = ExitStack()
            port = port_stack.enter_context(lease_port(cfg.sglang.host, cfg.sglang.port, locks))
            server = open_server(cfg.sglang, cfg.algorithm, run, out_dir, log_name=log_name, port=port,
                                 env=env)
            sized = server.watch_output(memory_sized)
            try:
                with gpu_phase(names, locks, exclusive=False) if sharing else ExitStack():
                    with gpu_sizing(names, locks) if sharing else ExitStack():
                        if sharing:
                            wait_for_room(cfg.sglang.mem_fraction_static, weights_bytes(run), gpus, names, locks,
                                          SIZING_WAIT_S, tp_size=cfg.sglang.tp_size)
                        server.start()
                        if sharing:
                            port_stack.enter_context(registered_server(names, locks, server.proc.pid))
                            server.wait_for(sized, SIZING_WAIT_S)
                    server.wait_ready()
            except BaseException as exc:
                with gpu_phase(names, locks, exclusive=False) if sharing else ExitStack():
                    server.stop()
                port_stack.close()
                if not (isinstance(exc, ServerError) and attempt < PORT_ATTEMPTS
                        and is_bind_failure(server.log_tail())):
                    raise
                log.info("[bench] the server could not bind its address (port %s); starting it again on another "
                         "port (%d/%d)", port, attempt + 1, PORT_ATTEMPTS)
                continue
            if sharing:  # measured alone, and stopped before the next server starts or measures
                stack.enter_context(gpu_phase(names, locks, exclusive=True))
            stack.enter_context(port_stack)  # left after the server stops (below), before the GPUs
            stack.callback(server.stop)
            break
        idle = 0
        if sharing:
            others, idle = _beside(gpus, names, locks, server.proc.pid)
            log.info("[bench] measuring alone on GPU %s beside %d idle server(s) of other points "
                     "(bench.servers_per_gpu=%d)", ",".join(gpus), idle, share)
            if others:
                log.warning("[bench] warning: other processes use the GPU; numbers may be off: %s",
                            "; ".join(others))
        yield Placement(server=server, gpus=gpus, others=others, idle_servers=idle)


def weights_bytes(run: PreparedRun) -> int | None:
    """The bytes of safetensors weights the server loads (the target's and the draft's export), or ``None``
    where the target is not a local directory (a hub id)."""
    target = Path(str(run.target)).expanduser() if run.target else None
    if target is None or not target.is_dir():
        return None
    files = list(target.glob("*.safetensors"))
    if run.export is not None:
        files += list(Path(run.export.path).glob("*.safetensors"))
    return sum(f.stat().st_size for f in files)


def wait_for_room(fraction: float | None, need: int | None, gpus: list[str], names: list[str], locks: Path,
                  wait_s: float, *, tp_size: int = 1, poll_s: float = 2.0) -> None:
    """Wait until ``fraction`` of the memory free on ``gpus`` holds a server's share of ``need`` bytes of weights.

    SGLang (0.5.17) refuses to start when the weights leave nothing of ``mem_fraction_static`` x (memory free
    at its start) for the KV cache. A sharer that stops frees memory: while one runs, wait for it (up to
    ``wait_s``); with none, waiting frees nothing. Unknown fraction, weights or free memory: nothing to check.

    Raises:
        ServerError: the share cannot hold the weights, and no sharer stopped in time (or none runs).
    """
    free = nvidia_smi.free_mib(gpus)
    if fraction is None or not need or free is None:
        return
    per_gpu = need / max(tp_size, 1)
    deadline, told = time.monotonic() + wait_s, False
    while fraction * free * 2**20 <= per_gpu:
        sharers = [g for g in sharing_groups(names, locks) if group_running(g)]
        if not sharers or time.monotonic() >= deadline:
            gib = 2**30
            raise ServerError(
                f"sglang.mem_fraction_static={fraction:g} of the {free / 1024:.1f} GiB free on GPU {','.join(gpus)} is "
                f"{fraction * free / 1024:.1f} GiB, not enough for the {per_gpu / gib:.1f} GiB of weights (target and "
                "draft) a server holds there: SGLang sizes a server from the memory free when it starts, so it would "
                "die at start-up (\"Loaded weights leave no GPU memory for the KV cache\")"
                + (f"; {len(sharers)} server(s) sharing the GPU did not stop within {wait_s:g} s" if sharers else "")
                + f". Raise sglang.mem_fraction_static above {per_gpu / (free * 2**20):.2f}, or lower "
                "bench.servers_per_gpu (docs/benchmarks.md, \"Sharing a GPU\").")
        if not told:
            log.info("[bench] waiting for a server sharing GPU %s to stop: %.1f GiB free, sglang.mem_fraction_static"
                     "=%g of it cannot hold %.1f GiB of weights", ",".join(gpus), free / 1024, fraction,
                     per_gpu / 2**30)
            told = True
        time.sleep(poll_s)
        free = nvidia_smi.free_mib(gpus) or free


def _beside(gpus: list[str], names: list[str], locks: Path, own_group: int) -> tuple[list[str], int]:
    """What runs on ``gpus`` (lock names ``names``) beside our server: (processes that are no sharing
    server's, idle sharers)."""
    groups = sharing_groups(names, locks) - {own_group}
    others, idle = [], set()
    for proc in nvidia_smi.processes_on(gpus):
        if proc.endswith(nvidia_smi.OWN):
            continue
        pid = proc.split(",", 1)[0].strip()
        group = process_group(int(pid)) if pid.isdigit() else None
        if group == own_group:
            continue
        if group in groups:
            idle.add(group)
        else:
            others.append(proc)
    return others, len(idle)


def wait_for_gpu_processes(wait_s: float, gpus: list[str] | None) -> list[str]:
    """Processes still on ``gpus`` (``None``: any GPU) after waiting up to ``wait_s`` for them to leave.

    A stopped server's last thread can hold its GPU memory for a few seconds after it was stopped
    (seen on the H100: 49 GB of the previous server still taken when the next point started); a
    process that stays (another server, a forgotten job) is returned for the record. Processes on
    GPUs leased to other jobs are theirs, not in the way.
    """
    deadline = time.monotonic() + wait_s
    others = nvidia_smi.processes_on(gpus)
    mine = [p for p in others if p.endswith(nvidia_smi.OWN)]
    if mine:  # memory this job holds itself: waiting cannot free it, and the server has less
        log.warning("[bench] warning: this process holds GPU memory itself: %s", "; ".join(mine))
    others = [p for p in others if p not in mine]
    if others and wait_s > 0:
        log.info("[bench] waiting up to %gs for %d process(es) to leave the GPU (bench.gpu_free_wait_s): %s",
                 wait_s, len(others), "; ".join(others))
    while others and time.monotonic() < deadline:
        time.sleep(1.0)
        others = [p for p in nvidia_smi.processes_on(gpus) if not p.endswith(nvidia_smi.OWN)]
    return others
