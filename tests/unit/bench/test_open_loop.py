"""Open-loop load against the fake server over HTTP: Poisson arrivals checked from the recorded send times,
the cap on requests in flight, and saturation reported, never a hang."""

from __future__ import annotations

import math
import threading

from automodel_spec.bench.client import sampling_params
from automodel_spec.bench.metrics import summarize_level
from automodel_spec.bench.open_loop import arrival_times, run_open_loop
from automodel_spec.bench.stream import stream_generate
from automodel_spec.bench.workload import Prompt


def prompts(n: int) -> list[Prompt]:
    return [Prompt(id=f"p{i}", category="k", text=f"text {i}") for i in range(n)]


def ks_exponential(gaps: list[float], rate: float) -> float:
    """Kolmogorov-Smirnov distance between the gaps' empirical distribution and Exp(rate)."""
    xs = sorted(gaps)
    n = len(xs)
    return max(max((i + 1) / n - (1 - math.exp(-rate * x)), (1 - math.exp(-rate * x)) - i / n)
               for i, x in enumerate(xs))


def streamed(server):
    return lambda payload: stream_generate(server.base_url + "/generate", payload, timeout=30)


def test_arrivals_are_a_seeded_poisson_process():
    times = arrival_times(50.0, 4000, seed=3)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 0 and all(g > 0 for g in gaps)
    assert abs(sum(gaps) / len(gaps) - 1 / 50) < 0.05 / 50  # mean gap 1 / rate
    assert ks_exponential(gaps, 50.0) < 1.63 / math.sqrt(len(gaps))  # exponential gaps (KS, 1% level)
    assert arrival_times(50.0, 4000, seed=3) == times and arrival_times(50.0, 4000, seed=4) != times


def test_arrivals_stop_at_the_count_or_the_duration():
    assert len(arrival_times(10.0, 7, seed=0)) == 7
    cut = arrival_times(100.0, 10_000, seed=0, duration_s=0.5)
    assert cut and max(cut) < 0.5 and len(cut) < 10_000
    assert 25 < len(cut) < 80  # ~50 expected within half a second at 100 a second


def test_recorded_send_times_follow_the_poisson_schedule(fake_server):
    server = fake_server()
    rate, n = 20.0, 40  # mean gap 50 ms: the sender's few ms of jitter stay small beside it
    run = run_open_loop(streamed(server), prompts(n), rate, sampling_params(4, 0.0), seed=7, progress=False,
                        concurrency=0)
    assert run.unsent == 0 and len(run.records) == n and all(r["ok"] for r in run.records)
    due = arrival_times(rate, n, seed=7)
    assert [r["scheduled_s"] for r in run.records] == due
    assert all(r["send_s"] >= r["scheduled_s"] for r in run.records)  # never sent early
    sends = [r["send_s"] for r in run.records]
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    # the gaps between the recorded sends are exponential: KS at the 1% level, and a coefficient of
    # variation near 1 (a fixed-interval sender would give 0)
    assert ks_exponential(gaps, rate) < 1.63 / math.sqrt(len(gaps))
    mean = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)) / mean
    assert 0.6 < cv < 1.5
    level = summarize_level(run.records, run.wall_s, None, concurrency=0, request_rate=rate, unsent=run.unsent,
                            window_s=run.window_s)
    assert level.key == "T0_r20" and level.streamed and level.saturated is False
    assert level.unsent_requests == 0 and level.requests == n and level.throughput_rps > 0


def test_the_cap_holds_requests_in_the_client_and_their_wait_is_recorded(fake_server):
    server = fake_server()
    in_flight, most, lock = [0], [0], threading.Lock()
    gen = streamed(server)

    def counting(payload):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            return gen(payload)
        finally:
            with lock:
                in_flight[0] -= 1

    run = run_open_loop(counting, prompts(10), 500.0, sampling_params(20, 0.0), seed=1, max_concurrency=2,
                        progress=False, concurrency=2)
    assert most[0] == 2 and len(run.records) == 10 and run.unsent == 0
    assert max(r["queue_s"] for r in run.records) > 0  # due every 2 ms, each taking ~20 ms: they queued
    assert all(r["concurrency"] == 2 and r["request_rate"] == 500.0 for r in run.records)


def test_a_load_above_capacity_saturates_and_ends(fake_server):
    # one request at a time in the server, ~30 ms each: capacity ~33 requests/s, asked for 400
    server = fake_server("--max-running-requests", "1")
    run = run_open_loop(streamed(server), prompts(24), 400.0, sampling_params(30, 0.0), seed=2, progress=False,
                        concurrency=0)
    level = summarize_level(run.records, run.wall_s, None, concurrency=0, request_rate=400.0, unsent=run.unsent,
                            window_s=run.window_s)
    assert all(r["ok"] for r in run.records) and level.saturated is True
    assert level.wait_growth_s > 0 and level.achieved_rate_rps > level.throughput_rps


def test_a_capped_load_past_its_duration_leaves_requests_unsent(fake_server):
    server = fake_server("--max-running-requests", "1")
    run = run_open_loop(streamed(server), prompts(200), 400.0, sampling_params(30, 0.0), seed=2, progress=False,
                        max_concurrency=1, duration_s=0.3, concurrency=1)
    assert run.unsent > 0 and len(run.records) + run.unsent <= 200 and run.window_s == 0.3
    level = summarize_level(run.records, run.wall_s, None, concurrency=1, request_rate=400.0, unsent=run.unsent,
                            window_s=run.window_s)
    assert level.saturated is True and level.unsent_requests == run.unsent and level.key == "T0_r400_c1"
