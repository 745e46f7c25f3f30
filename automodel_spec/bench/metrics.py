"""Turn request records into the numbers a benchmark point reports (a ``LevelResult``)."""

from __future__ import annotations

from automodel_spec.bench.result import CategoryResult, LevelResult
from automodel_spec.bench.slo import apply_goals
from automodel_spec.config.schema import SLOConfig


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); ``None`` for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def sem(values: list[float]) -> float | None:
    """Standard error of the mean (``None`` for fewer than two values)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5


def summarize_level(records: list[dict], wall_s: float, num_steps: int | None, *,
                    temperature: float = 0.0, concurrency: int = 1, request_rate: float | None = None,
                    unsent: int = 0, window_s: float | None = None, slo: SLOConfig | None = None) -> LevelResult:
    """Metrics of one level.

    ``accept_length`` is completion tokens per verify step (from per-request ``meta_info``);
    ``acceptance_rate`` is the share of drafted positions accepted, ``(accept_length - 1) / num_steps``.
    ``tpot_s`` is latency per output token (prefill included: requests are not streamed).
    ``accept_length_sem`` and ``request_tok_per_s_sem`` are standard errors over the requests, so
    two settings whose difference is within a few of them are not told apart by this workload.
    ``accept_histogram`` sums the requests' ``spec_correct_drafts_histogram``; ``by_category`` is the
    accept length of each prompt category (a record's ``category``).
    Streamed records (``chunk_s``, ``chunk_tokens``) give the streaming latencies (``streaming_latencies``);
    an open-loop level (``request_rate``, the records' ``scheduled_s``) its achieved rate and saturation;
    ``slo`` the goodput and whether the goals were met (``bench.slo``).
    """
    ok = [r for r in records if r.get("ok")]
    tokens = sum(r["completion_tokens"] for r in ok)
    verify = sum(r.get("spec_verify_ct", 0) for r in ok)
    latencies = [r["latency_s"] for r in ok]
    per_token = [r["latency_s"] / r["completion_tokens"] for r in ok if r["completion_tokens"]]
    accept = tokens / verify if verify else None
    per_request_accept = [r["completion_tokens"] / r["spec_verify_ct"] for r in ok if r.get("spec_verify_ct")]
    per_request_rate = [r["completion_tokens"] / r["latency_s"] for r in ok if r["latency_s"] > 0]
    histograms = [r["spec_correct_drafts_histogram"] for r in ok if r.get("spec_correct_drafts_histogram")]
    level = LevelResult(
        temperature=temperature, concurrency=concurrency, request_rate=request_rate,
        requests=len(records), failed_requests=len(records) - len(ok), output_tokens=tokens,
        wall_s=wall_s, output_tok_per_s=tokens / wall_s if wall_s > 0 else None,
        latency_p50_s=percentile(latencies, 50), latency_p90_s=percentile(latencies, 90),
        latency_p99_s=percentile(latencies, 99),
        throughput_rps=len(ok) / wall_s if wall_s > 0 else None,
        tpot_s=sum(per_token) / len(per_token) if per_token else None,
        accept_length=accept,
        acceptance_rate=(accept - 1) / num_steps if accept is not None and num_steps else None,
        accept_length_sem=sem(per_request_accept),
        request_tok_per_s=sum(per_request_rate) / len(per_request_rate) if per_request_rate else None,
        request_tok_per_s_sem=sem(per_request_rate),
        verify_steps=verify,
        accept_histogram=sum_histograms(histograms) if histograms else None,
        histogram_requests=len(histograms),
        by_category=summarize_categories(ok),
        **streaming_latencies(ok),
    )
    if request_rate is not None:
        sent = [r["send_s"] for r in records if r.get("send_s") is not None]
        span = max(window_s or 0.0, max(sent) - min(sent)) if sent else 0.0
        level.achieved_rate_rps = (len(sent) - 1) / span if len(sent) > 1 and span > 0 else None
        level.unsent_requests = unsent
        level.queue_p99_s = percentile([r.get("queue_s") or 0.0 for r in records], 99)
        level.wait_growth_s, level.saturated = saturation(records, unsent)
    if slo is not None:
        apply_goals(level, ok, slo)
    return level


def streaming_latencies(ok: list[dict]) -> dict:
    """TTFT, inter-token latency (between chunks and per token) and TPOT at p50 / p90 / p99.

    Over the streamed records among ``ok``: TTFT and TPOT one value a request, TPOT for requests of two
    tokens or more (``(latency - ttft) / (tokens - 1)``); the gaps between consecutive chunks of every
    request pooled, as SGLang's ``bench_serving`` pools them. Per token, a gap counts once for each token of
    the chunk that ended it, divided among them. Empty without streamed records.
    """
    streamed = [r for r in ok if r.get("chunk_s")]
    if not streamed:
        return {}
    gaps, per_token = [], []
    for r in streamed:
        times, tokens = r["chunk_s"], r["chunk_tokens"]
        for k in range(1, len(times)):
            gap = times[k] - times[k - 1]
            gaps.append(gap)
            per_token += [gap / tokens[k]] * tokens[k]
    ttft = [r["chunk_s"][0] for r in streamed]
    tpot = [(r["latency_s"] - r["chunk_s"][0]) / (r["completion_tokens"] - 1) for r in streamed
            if r["completion_tokens"] > 1]
    out = {"streamed": True}
    for name, values in (("ttft", ttft), ("itl", gaps), ("itl_token", per_token), ("tpot", tpot)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}_s"] = percentile(values, q)
    return out


def saturation(records: list[dict], unsent: int) -> tuple[float | None, bool]:
    """(wait growth, saturated) of an open-loop level.

    A request's wait is from when it was due to its first token (its wait in the client, ``queue_s``, plus
    its TTFT; its latency when not streamed). Below the server's capacity the waits of early and late
    arrivals are alike; above it the queue, and so the wait, grows with every arrival. The growth is the
    median wait of the last third of the arrivals less that of the first third; the level saturated when
    the growth exceeds the median latency of the first third (by the end a request waited longer than one
    took before the queue built up), or when requests were left unsent.
    """
    ok = sorted((r for r in records if r.get("ok")), key=lambda r: r["i"])
    waits = [(r.get("queue_s") or 0.0) + (r["ttft_s"] if r.get("ttft_s") is not None else r["latency_s"]) for r in ok]
    third = len(waits) // 3
    if third < 1:
        return None, unsent > 0
    growth = percentile(waits[-third:], 50) - percentile(waits[:third], 50)
    return growth, unsent > 0 or growth > percentile([r["latency_s"] for r in ok[:third]], 50)


def sum_histograms(histograms: list[list[int]]) -> list[int]:
    """Element-wise sum of histograms of different lengths."""
    out = [0] * max(len(h) for h in histograms)
    for h in histograms:
        for i, v in enumerate(h):
            out[i] += int(v)
    return out


def summarize_categories(ok: list[dict]) -> dict[str, CategoryResult]:
    """Accept length and per-request speed of each prompt category among the successful requests."""
    out = {}
    for cat in sorted({r.get("category") or "custom" for r in ok}):
        mine = [r for r in ok if (r.get("category") or "custom") == cat]
        tokens = sum(r["completion_tokens"] for r in mine)
        verify = sum(r.get("spec_verify_ct", 0) for r in mine)
        per_request = [r["completion_tokens"] / r["spec_verify_ct"] for r in mine if r.get("spec_verify_ct")]
        rates = [r["completion_tokens"] / r["latency_s"] for r in mine if r["latency_s"] > 0]
        out[cat] = CategoryResult(requests=len(mine), output_tokens=tokens, verify_steps=verify,
                                  accept_length=tokens / verify if verify else None,
                                  accept_length_sem=sem(per_request),
                                  request_tok_per_s=sum(rates) / len(rates) if rates else None)
    return out


def add_speedups(levels: dict[str, LevelResult], baseline_levels: dict[str, LevelResult] | None) -> None:
    """Set ``speedup`` (tokens/s over the baseline's at the same level) on each level."""
    for key, m in levels.items():
        base_level = (baseline_levels or {}).get(key)
        base = base_level.output_tok_per_s if base_level is not None else None
        mine = m.output_tok_per_s
        m.baseline_tok_per_s = base
        m.speedup = mine / base if base and mine else None
        # goodput of no speculation where it met the goals: a setting that does not reach it loses to it
        met = base_level is not None and base_level.slo_met
        m.baseline_goodput_rps = base_level.goodput_rps if met else None
