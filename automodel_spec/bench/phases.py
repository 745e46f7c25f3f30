"""A load that changes: the phases of ``bench.phases`` run back to back against one server.

Each phase is a closed loop of ``c<N>`` requests in flight (``client.run_requests``) or an open loop of
``r<R>`` requests/s (``open_loop.run_open_loop``), with ``bench.num_prompts`` requests (a closed loop at
least twice its concurrency; an open loop fewer when ``bench.duration_s`` runs out). The server is neither
restarted nor flushed between phases, so a setting that adapts to load (SGLang's adaptive mode) carries
its state from one phase into the next, as it would serving users. A phase starts when the previous one's
requests have all been answered: each phase's numbers are its own. The whole run is reported too: every
request of every phase over the time from the first phase's start to the last one's end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from automodel_spec.bench.client import run_requests
from automodel_spec.bench.metrics import summarize_level
from automodel_spec.bench.open_loop import run_open_loop
from automodel_spec.bench.result import LevelResult
from automodel_spec.bench.workload import Prompt, level_prompts
from automodel_spec.config.rules import phase_load
from automodel_spec.config.schema import BenchConfig


@dataclass
class PhaseRun:
    """One phase (``level.phase`` >= 1) or the whole run (``level.phase == 0``) and its records."""

    level: LevelResult
    records: list[dict]


def closed_loop_concurrencies(phases: list[str]) -> list[int]:
    """The concurrencies of the closed-loop phases (``c<N>``), in order."""
    return [int(value) for kind, value in map(phase_load, phases) if kind == "concurrency"]


def run_phased_load(generate, pool: list[Prompt], bench: BenchConfig, params: dict, num_steps: int | None, *,
                    temperature: float, label: str = "", progress: bool = True) -> list[PhaseRun]:
    """Run ``bench.phases`` in order; return each phase's level, then the whole run's (``phase`` 0)."""
    runs, t_start = [], time.perf_counter()
    common = {"temperature": temperature, "slo": bench.slo}
    for place, text in enumerate(bench.phases, 1):
        kind, value = phase_load(text)
        phase_t0 = time.perf_counter()
        name = f"{label} phase {place}/{len(bench.phases)} {text}".strip()
        if kind == "concurrency":
            prompts = level_prompts(pool, bench, concurrency=value, phase=place)
            records, wall = run_requests(generate, prompts, value, params, label=name, progress=progress)
            level = summarize_level(records, wall, num_steps, concurrency=value, **common)
        else:
            prompts = level_prompts(pool, bench, concurrency=0, request_rate=value, phase=place)
            run = run_open_loop(generate, prompts, value, params, seed=bench.seed + place,
                                max_concurrency=bench.max_concurrency, duration_s=bench.duration_s, label=name,
                                progress=progress, concurrency=bench.max_concurrency or 0)
            records = run.records
            level = summarize_level(records, run.wall_s, num_steps, concurrency=bench.max_concurrency or 0,
                                    request_rate=value, unsent=run.unsent, window_s=run.window_s, **common)
        level.phase, level.phase_load = place, text
        for r in records:  # when it was sent in the whole run, beside its time in the phase (``send_s``)
            r.update(phase=place, run_s=phase_t0 - t_start + r["send_s"])
        runs.append(PhaseRun(level, records))
    every = [r for run in runs for r in run.records]
    whole = summarize_level(every, time.perf_counter() - t_start, num_steps, concurrency=0, **common)
    whole.phase, whole.phase_load = 0, " -> ".join(bench.phases)
    whole.unsent_requests = sum(run.level.unsent_requests for run in runs)
    if any(run.level.saturated is not None for run in runs):
        whole.saturated = any(run.level.saturated for run in runs)
        if bench.slo is not None and whole.slo_missed is not None and whole.saturated:
            whole.slo_missed.append("saturated in a phase")
            whole.slo_met = False
    return [*runs, PhaseRun(whole, every)]
