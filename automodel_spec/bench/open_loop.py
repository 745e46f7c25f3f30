"""Open-loop load: requests sent at the times of a seeded Poisson process, whatever the server does.

A closed loop (``client.run_requests``) sends the next request when one finishes, so a slow server is
sent less; users are not. Here request ``k`` is due at ``arrival_times(...)[k]``. Each is sent at its
time from a thread of its own, unless ``max_concurrency`` requests are in flight: then it waits in the
client, and the record says how long (``queue_s``). A level is bounded by its number of requests and,
optionally, by ``duration_s`` seconds of arrivals: requests still waiting when those run out are not sent
(``unsent``), so a load above the server's capacity ends, as a finding (``saturation``), never a hang.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from automodel_spec.bench.client import progress_bar, send_request
from automodel_spec.bench.workload import Prompt

# requests in flight at once without a cap: one client thread each
MAX_THREADS = 1024


def arrival_times(rate: float, count: int, seed: int, duration_s: float | None = None) -> list[float]:
    """When each request is due, seconds after the level starts: a Poisson process of ``rate`` a second.

    The first is due at once, each next one an exponential gap (mean ``1 / rate``) later; at most
    ``count`` of them, and none at or after ``duration_s``. The same seed gives the same times.
    """
    rng = random.Random(f"arrivals:{seed}:{rate!r}")
    times, t = [], 0.0
    while len(times) < count and (duration_s is None or t < duration_s):
        times.append(t)
        t += rng.expovariate(rate)
    return times


@dataclass
class OpenLoopRun:
    """What an open-loop level did.

    Attributes:
        records: one per request sent, sorted by its place in the arrival order (``i``), each with its
            due time (``scheduled_s``), when it was sent (``send_s``) and its wait in the client
            (``queue_s``).
        wall_s: first request sent to last answered.
        unsent: requests still waiting for a free place when the arrivals' ``duration_s`` ran out.
        window_s: the arrivals' span (the last due time, or ``duration_s`` when it cut them).
    """

    records: list[dict]
    wall_s: float
    unsent: int
    window_s: float


def run_open_loop(generate, prompts: list[Prompt], rate: float, params: dict, *, seed: int,
                  max_concurrency: int | None = None, duration_s: float | None = None,
                  label: str = "", progress: bool = True, **fields) -> OpenLoopRun:
    """Send ``prompts`` at Poisson arrival times of ``rate`` requests/s (module docstring).

    ``fields`` go into every record (the level's load, as ``client.send_request`` takes them).
    """
    due = arrival_times(rate, len(prompts), seed, duration_s)
    cap = max_concurrency or MAX_THREADS
    places = threading.Semaphore(cap)
    bar = progress_bar(len(due), label) if progress else None
    records: list[dict] = []
    lock = threading.Lock()

    def one(i: int, prompt: Prompt, scheduled: float) -> None:
        try:
            rec = send_request(generate, i, prompt, params, t0, request_rate=rate, **fields)
        finally:
            places.release()
        rec.update(scheduled_s=scheduled, queue_s=max(0.0, rec["send_s"] - scheduled))
        with lock:
            records.append(rec)
        if bar:
            bar.update(1)

    unsent = 0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(cap, max(1, len(due)))) as pool:
        for i, (prompt, scheduled) in enumerate(zip(prompts, due, strict=False)):
            wait = scheduled - (time.perf_counter() - t0)
            if wait > 0:
                time.sleep(wait)
            if not _take_place(places, t0, duration_s):
                unsent = len(due) - i  # the arrivals' time ran out while this one waited for a place
                break
            pool.submit(one, i, prompt, scheduled)
    ends = [r["send_s"] + r["latency_s"] for r in records]
    starts = [r["send_s"] for r in records]
    wall = max(ends) - min(starts) if records else 0.0
    if bar:
        bar.close()
    window = duration_s if duration_s is not None and unsent else (due[-1] if due else 0.0)
    return OpenLoopRun(records=sorted(records, key=lambda r: r["i"]), wall_s=wall, unsent=unsent, window_s=window)


def _take_place(places: threading.Semaphore, t0: float, duration_s: float | None) -> bool:
    """Wait for a place among the requests in flight; ``False`` when the arrivals' time ran out first."""
    if duration_s is None:
        places.acquire()  # every request in flight ends (each is bounded by its request timeout)
        return True
    return places.acquire(timeout=max(0.0, duration_s - (time.perf_counter() - t0)))
