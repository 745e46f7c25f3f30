"""A level's streaming numbers from hand-made records: TTFT / ITL (per chunk, per token) / TPOT percentiles,
saturation of an open loop, goodput and the service-level goals."""

from __future__ import annotations

import pytest

from automodel_spec.bench.metrics import percentile, saturation, streaming_latencies, summarize_level
from automodel_spec.bench.result import LevelResult
from automodel_spec.bench.slo import goals_missed, request_is_good
from automodel_spec.config.schema import SLOConfig


def streamed(chunk_s: list[float], chunk_tokens: list[int], latency: float | None = None, **extra) -> dict:
    return {"ok": True, "completion_tokens": sum(chunk_tokens), "prompt_tokens": 8, "spec_verify_ct": 0,
            "latency_s": latency if latency is not None else chunk_s[-1], "chunk_s": chunk_s,
            "chunk_tokens": chunk_tokens, "ttft_s": chunk_s[0], **extra}


def test_p99_interpolates_between_the_two_largest():
    xs = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(xs, 99) == pytest.approx(99.01)
    assert percentile([0.1, 0.5], 99) == pytest.approx(0.1 + 0.4 * 0.99)


def test_gaps_per_chunk_and_per_token_and_time_per_output_token():
    # first token at 100 ms, then a burst of 4 tokens 200 ms later, then 2 tokens 100 ms later
    one = streamed([0.1, 0.3, 0.4], [1, 4, 2])
    out = streaming_latencies([one])
    assert out["streamed"] is True
    assert out["ttft_p50_s"] == pytest.approx(0.1)
    assert out["itl_p50_s"] == pytest.approx(0.15) and out["itl_p99_s"] == pytest.approx(0.1 + 0.1 * 0.99)
    assert out["itl_token_p50_s"] == pytest.approx(0.05) == out["itl_token_p99_s"]  # 0.2 / 4 and 0.1 / 2
    assert out["tpot_p50_s"] == pytest.approx((0.4 - 0.1) / 6)


def test_gaps_are_pooled_over_requests_and_unstreamed_records_give_nothing():
    a, b = streamed([0.1, 0.2], [1, 1]), streamed([0.3, 0.9, 1.0], [1, 2, 1])
    out = streaming_latencies([a, b])
    assert out["ttft_p50_s"] == pytest.approx(0.2)  # of 0.1 and 0.3
    assert out["itl_p50_s"] == pytest.approx(0.1)  # gaps 0.1, 0.6, 0.1
    # per token: 0.1 once, 0.3 twice, 0.1 once -> median 0.2
    assert out["itl_token_p50_s"] == pytest.approx(0.2)
    assert streaming_latencies([{"ok": True, "completion_tokens": 4, "latency_s": 1.0}]) == {}


def test_summarized_level_carries_the_percentiles_and_the_request_rate():
    records = [streamed([0.05, 0.07], [1, 3], i=k, send_s=0.1 * k, queue_s=0.0) for k in range(1, 10)]
    m = summarize_level(records, 1.0, None, concurrency=0, request_rate=10.0, window_s=0.8)
    assert m.streamed and m.ttft_p50_s == pytest.approx(0.05) and m.itl_p90_s == pytest.approx(0.02)
    assert m.request_rate == 10.0 and m.achieved_rate_rps == pytest.approx(8 / 0.8)
    assert m.throughput_rps == pytest.approx(9.0) and m.saturated is False and m.key == "T0_r10"


def _open_loop(waits: list[float], latency: float) -> list[dict]:
    return [{"ok": True, "i": i, "queue_s": 0.0, "ttft_s": w, "latency_s": latency + w} for i, w in enumerate(waits)]


def test_a_queue_that_grows_is_saturation_and_a_steady_one_is_not():
    steady = _open_loop([0.01, 0.012, 0.011, 0.013, 0.01, 0.012, 0.011, 0.01, 0.012], latency=0.1)
    growth, saturated = saturation(steady, unsent=0)
    assert abs(growth) < 0.01 and saturated is False
    growing = _open_loop([0.01 + 0.05 * i for i in range(9)], latency=0.1)
    growth, saturated = saturation(growing, unsent=0)
    assert growth == pytest.approx(0.3) and saturated is True
    assert saturation(steady, unsent=3)[1] is True  # requests left unsent: the cap's queue never drained
    assert saturation(steady[:2], unsent=0) == (None, False)


def test_a_request_is_good_when_every_bound_holds():
    fast = streamed([0.05, 0.07, 0.09], [1, 2, 2])  # ttft 50 ms, gaps 20 ms, tpot 10 ms
    assert request_is_good(fast, SLOConfig(ttft_s=0.06, itl_s=0.025, tpot_s=0.011))
    assert not request_is_good(fast, SLOConfig(ttft_s=0.04))
    assert not request_is_good(fast, SLOConfig(itl_s=0.019))  # its longest gap is 20 ms
    assert not request_is_good(fast, SLOConfig(tpot_s=0.009))
    assert not request_is_good({**fast, "ok": False}, SLOConfig(ttft_s=1.0))
    assert not request_is_good({"ok": True, "completion_tokens": 4, "latency_s": 0.1}, SLOConfig(ttft_s=1.0))


def test_goodput_counts_good_requests_over_the_wall_time_and_the_goals_read_p99():
    good = [streamed([0.01, 0.02], [1, 1]) for _ in range(6)]
    slow = [streamed([0.5, 0.51], [1, 1]) for _ in range(2)]
    m = summarize_level(good + slow, 2.0, None, slo=SLOConfig(ttft_s=0.1))
    assert m.good_requests == 6 and m.goodput_rps == pytest.approx(3.0)
    assert m.slo_met is False and m.slo_missed == [f"ttft_p99_s {m.ttft_p99_s * 1e3:.2f} ms > 100.00 ms"]
    met = summarize_level(good, 2.0, None, slo=SLOConfig(ttft_s=0.1))
    assert met.slo_met is True and met.slo_missed == [] and met.goodput_rps == pytest.approx(3.0)
    assert summarize_level(good, 2.0, None, slo=SLOConfig()).goodput_rps is None  # no goal: no goodput


def test_failed_requests_and_saturation_miss_the_goals():
    level = LevelResult(temperature=0.0, concurrency=1, failed_requests=2, saturated=True, ttft_p99_s=0.01)
    assert goals_missed(level, SLOConfig(ttft_s=0.1)) == ["2 request(s) failed", "saturated (the queue grew without bound)"]
    assert goals_missed(LevelResult(temperature=0.0, concurrency=1), SLOConfig(itl_s=0.1)) == \
        ["itl_p99_s not measured (requests not streamed)"]
