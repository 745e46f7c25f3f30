"""A phased load (``bench.phases``) against an in-process ``generate``: phases run back to back, each
reported alone, then the whole run.

The fake ``generate`` notes, at each request's start, how many earlier requests had been answered and how
many were in flight, so the separation is checked by counts, not by time: the first request of a phase
starts only when every request of the phases before it has been answered. Checked besides: each phase's
load (concurrency or rate, its seeded prompts and arrival times), its own level (``phase``,
``phase_load``, requests, concurrency / request rate), the records' ``phase`` and ``run_s``, and the whole
run's level (``phase`` 0, every record, unsent requests and saturation summed over the phases, a
saturated phase failing the whole run's goals).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

import automodel_spec.bench.phases as phases
from automodel_spec.bench.client import sampling_params
from automodel_spec.bench.open_loop import arrival_times
from automodel_spec.bench.workload import Prompt, level_prompts
from automodel_spec.config.schema import BenchConfig, SLOConfig

POOL = [Prompt(id=f"{cat}{i}", category=cat, text=f"{cat} prompt {i}") for cat in ("chat", "code") for i in range(3)]
PARAMS = sampling_params(8, 0.0)


class Server:
    """A thread-safe ``generate(payload)``: every answer is 8 tokens in 4 verify steps (accept length 2)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = self.answered = 0
        self.starts: list[tuple[int, int]] = []  # per request, in start order: (answered before it, in flight)
        self.texts: list[str] = []

    def __call__(self, payload: dict) -> dict:
        with self.lock:
            self.in_flight += 1
            self.starts.append((self.answered, self.in_flight))
            self.texts.append(payload["text"])
        try:
            return {"text": "x", "meta_info": {"completion_tokens": 8, "prompt_tokens": 3, "spec_verify_ct": 4}}
        finally:
            with self.lock:
                self.in_flight -= 1
                self.answered += 1


def run(bench: BenchConfig, server: Server | None = None) -> list[phases.PhaseRun]:
    return phases.run_phased_load(server or Server(), POOL, bench, PARAMS, 3, temperature=0.0, progress=False)


def test_closed_loop_concurrencies_are_the_c_phases_in_order():
    assert phases.closed_loop_concurrencies(["c1", "r2.5", "c8", "c1"]) == [1, 8, 1]
    assert phases.closed_loop_concurrencies(["r1"]) == []


def test_a_phase_starts_only_when_the_previous_ones_were_answered():
    server = Server()
    bench = BenchConfig(num_prompts=4, seed=5, phases=["c1", "c3", "r1000", "c2"])
    runs = run(bench, server)
    sizes = [len(r.records) for r in runs[:-1]]
    assert sizes == [4, 6, 4, 4]  # num_prompts, at least twice a closed loop's concurrency
    first = 0
    for size, cap in zip(sizes, (1, 3, None, 2), strict=True):
        answered, _ = server.starts[first]
        assert answered == first  # every earlier phase's request answered, none of this one yet
        if cap is not None:
            assert max(n for _, n in server.starts[first:first + size]) <= cap
        first += size
    assert first == len(server.starts)


def test_each_phase_sends_its_own_seeded_prompts():
    server = Server()
    bench = BenchConfig(num_prompts=4, seed=5, phases=["c1", "c3", "r1000"])
    runs = run(bench, server)
    for place, (text, load) in enumerate((("c1", 1), ("c3", 3), ("r1000", None)), 1):
        expected = (level_prompts(POOL, bench, concurrency=load, phase=place) if load else
                    level_prompts(POOL, bench, concurrency=0, request_rate=1000.0, phase=place))
        assert [r["prompt_id"] for r in runs[place - 1].records] == [p.id for p in expected], text
    # the whole run sent the prompts the one rule says it did (a check of the run reads those)
    assert [r["prompt_id"] for r in runs[-1].records] == [p.id for p in level_prompts(POOL, bench, concurrency=0,
                                                                                      phase=0)]
    # an open-loop phase's arrivals are seeded by bench.seed + its place
    assert [r["scheduled_s"] for r in runs[2].records] == arrival_times(1000.0, 4, seed=5 + 3)


def test_each_phase_is_reported_as_its_own_level():
    bench = BenchConfig(num_prompts=4, phases=["c1", "c3", "r1000"], max_concurrency=2)
    runs = run(bench)
    levels = [r.level for r in runs]
    assert [(lv.phase, lv.phase_load) for lv in levels] == [(1, "c1"), (2, "c3"), (3, "r1000"),
                                                            (0, "c1 -> c3 -> r1000")]
    assert [lv.concurrency for lv in levels] == [1, 3, 2, 0]  # an open loop's: its cap on requests in flight
    assert [lv.request_rate for lv in levels] == [None, None, 1000.0, None]
    assert [lv.requests for lv in levels] == [4, 6, 4, 14]
    assert [lv.output_tokens for lv in levels] == [32, 48, 32, 112]
    assert all(lv.accept_length == 2.0 and lv.acceptance_rate == pytest.approx(1 / 3) for lv in levels)
    assert levels[2].saturated is not None and levels[0].saturated is None  # an open loop's finding only
    assert levels[3].saturated == levels[2].saturated
    # the whole run spans the phases (each phase's wall time is inside it)
    assert levels[3].wall_s >= sum(lv.wall_s for lv in levels[:3])


def test_records_carry_their_phase_and_when_they_were_sent_in_the_whole_run():
    runs = run(BenchConfig(num_prompts=4, phases=["c2", "r1000", "c1"]))
    whole = runs[-1].records
    assert whole == [r for phase in runs[:-1] for r in phase.records]
    assert [r["phase"] for r in whole] == [1] * 4 + [2] * 4 + [3] * 4
    assert all(r["run_s"] >= r["send_s"] for r in whole)
    for before, after in zip(runs[:-2], runs[1:-1], strict=True):
        # in the whole run's time, a phase's first request is sent after the previous phase's last answer
        assert min(r["run_s"] for r in after.records) >= max(r["run_s"] + r["latency_s"] for r in before.records)


def test_closed_loops_alone_leave_saturation_and_goals_unset():
    runs = run(BenchConfig(num_prompts=2, phases=["c1", "c2"]))
    whole = runs[-1].level
    assert whole.saturated is None and whole.slo_met is None and whole.unsent_requests == 0


def test_a_saturated_phase_makes_the_whole_run_saturated_and_miss_its_goals(monkeypatch):
    real = phases.run_open_loop

    def left_requests_unsent(*args, **kwargs):  # the arrivals' time ran out with 3 requests waiting
        return dataclasses.replace(real(*args, **kwargs), unsent=3)

    monkeypatch.setattr(phases, "run_open_loop", left_requests_unsent)
    bench = BenchConfig(num_prompts=4, phases=["c1", "r1000", "c1"], slo=SLOConfig(ttft_s=10.0))
    runs = run(bench)
    assert runs[1].level.saturated is True and runs[1].level.unsent_requests == 3
    whole = runs[-1].level
    assert whole.unsent_requests == 3 and whole.saturated is True
    assert whole.slo_met is False and "saturated in a phase" in whole.slo_missed


def test_a_phase_that_is_not_a_load_is_refused_before_anything_is_sent():
    server = Server()
    with pytest.raises(ValueError, match=r"phase 'x8' is not c<N>"):
        run(BenchConfig(num_prompts=2, phases=["x8", "c1"]), server)
    assert server.starts == []
