"""Turning request records into a level's numbers: percentiles, throughput, accept length, speedup."""

from __future__ import annotations

import pytest

from automodel_spec.bench.metrics import add_speedups, percentile, sem, summarize_level
from automodel_spec.bench.result import LevelResult


def rec(latency: float, tokens: int = 16, verify: int = 4, ok: bool = True) -> dict:
    if not ok:
        return {"ok": False, "error": "ConnectionError: boom", "latency_s": latency}
    return {"ok": True, "completion_tokens": tokens, "prompt_tokens": 8, "spec_verify_ct": verify,
            "latency_s": latency}


def test_percentile_interpolates_linearly():
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    xs = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 4.0
    assert percentile(xs, 50) == pytest.approx(2.5)
    assert percentile(xs, 90) == pytest.approx(3.7)
    assert percentile(list(range(101)), 90) == pytest.approx(90.0)


def test_level_throughput_latency_and_accept_length():
    records = [rec(0.1), rec(0.2), rec(0.3), rec(0.4)]
    m = summarize_level(records, wall_s=0.5, num_steps=3)
    assert m.requests == 4 and m.failed_requests == 0
    assert m.output_tokens == 64
    assert m.wall_s == 0.5
    assert m.output_tok_per_s == pytest.approx(128.0)
    assert m.latency_p50_s == pytest.approx(0.25)
    assert m.latency_p90_s == pytest.approx(0.37)
    assert m.tpot_s == pytest.approx((0.1 + 0.2 + 0.3 + 0.4) / 16 / 4)
    assert m.accept_length == pytest.approx(4.0)  # 64 tokens over 16 verify steps
    assert m.acceptance_rate == pytest.approx(1.0)  # (4 - 1) / 3: every drafted token accepted


def test_standard_errors_over_the_requests():
    # per-request accept lengths 2, 4, 6 and 8: mean 5, sample sd sqrt(20/3), sem sqrt(20/3)/2
    records = [rec(0.1, tokens=16, verify=8), rec(0.2, tokens=16, verify=4), rec(0.3, tokens=18, verify=3),
               rec(0.4, tokens=16, verify=2)]
    m = summarize_level(records, wall_s=1.0, num_steps=7)
    assert m.accept_length_sem == pytest.approx((20 / 3) ** 0.5 / 2)
    rates = [160.0, 80.0, 60.0, 40.0]
    assert m.request_tok_per_s == pytest.approx(85.0)
    assert m.request_tok_per_s_sem == pytest.approx(sem(rates))
    single = summarize_level([rec(0.1)], wall_s=0.1, num_steps=3)
    assert single.accept_length_sem is None and single.request_tok_per_s_sem is None


def test_sem():
    assert sem([]) is None and sem([3.0]) is None
    assert sem([1.0, 3.0]) == pytest.approx(1.0)  # sd sqrt(2), over sqrt(2)


def test_partial_acceptance_rate():
    m = summarize_level([rec(0.1, tokens=10, verify=5)], wall_s=1.0, num_steps=3)
    assert m.accept_length == pytest.approx(2.0)
    assert m.acceptance_rate == pytest.approx(1 / 3)


def test_failed_requests_are_counted_but_not_measured():
    records = [rec(0.2), rec(9.0, ok=False), rec(0.4)]
    m = summarize_level(records, wall_s=1.0, num_steps=3)
    assert m.requests == 3 and m.failed_requests == 1
    assert m.output_tokens == 32
    assert m.latency_p50_s == pytest.approx(0.3)  # the failed request's 9 s is not a latency
    assert m.latency_p90_s == pytest.approx(0.38)


def test_tpot_averages_only_requests_that_generated_tokens():
    m = summarize_level([rec(0.32, tokens=16), rec(0.05, tokens=0, verify=0)], wall_s=1.0, num_steps=3)
    assert m.tpot_s == pytest.approx(0.02)


def test_no_speculation_and_nothing_succeeded():
    base = summarize_level([rec(0.2, verify=0)], wall_s=0.2, num_steps=None)
    assert base.accept_length is None and base.acceptance_rate is None
    assert base.output_tok_per_s == pytest.approx(80.0)
    dead = summarize_level([rec(1.0, ok=False), rec(1.0, ok=False)], wall_s=1.0, num_steps=3)
    assert dead.failed_requests == 2 and dead.output_tokens == 0
    assert dead.latency_p50_s is None and dead.tpot_s is None and dead.accept_length is None
    assert summarize_level([], wall_s=0.0, num_steps=3).output_tok_per_s is None


def lv(tok_s):
    return LevelResult(temperature=0.0, concurrency=1, output_tok_per_s=tok_s)


def test_speedups_against_the_baseline_at_the_same_level():
    levels = {"1": lv(150.0), "4": lv(300.0), "8": lv(10.0)}
    baseline = {"1": lv(100.0), "4": lv(400.0)}
    add_speedups(levels, baseline)
    assert levels["1"].speedup == pytest.approx(1.5) and levels["1"].baseline_tok_per_s == 100.0
    assert levels["4"].speedup == pytest.approx(0.75)
    assert levels["8"].speedup is None and levels["8"].baseline_tok_per_s is None  # no baseline level


def test_speedups_without_a_baseline_or_throughput():
    levels = {"1": lv(150.0), "2": lv(None)}
    add_speedups(levels, None)
    assert levels["1"].speedup is None and levels["1"].baseline_tok_per_s is None
    add_speedups(levels, {"2": lv(0.0), "1": lv(0.0)})
    assert levels["1"].speedup is None and levels["2"].speedup is None


def test_histograms_and_categories():
    records = [{**rec(0.1, tokens=12, verify=4), "category": "math", "spec_correct_drafts_histogram": [0, 0, 4]},
               {**rec(0.2, tokens=8, verify=4), "category": "chat", "spec_correct_drafts_histogram": [2, 1, 0, 1]},
               {**rec(0.2, tokens=6, verify=3), "category": "chat"},  # no histogram reported
               rec(1.0, ok=False)]
    m = summarize_level(records, wall_s=1.0, num_steps=3, temperature=0.5, concurrency=2)
    assert (m.temperature, m.concurrency, m.key) == (0.5, 2, "T0.5_c2")
    assert m.accept_histogram == [2, 1, 4, 1] and m.histogram_requests == 2 and m.verify_steps == 11
    assert set(m.by_category) == {"math", "chat"}  # the failed request counts in no category
    assert m.by_category["math"].accept_length == pytest.approx(3.0)
    chat = m.by_category["chat"]
    assert (chat.requests, chat.output_tokens, chat.verify_steps) == (2, 14, 7)
    assert chat.accept_length == pytest.approx(2.0) and chat.accept_length_sem == pytest.approx(0.0)
