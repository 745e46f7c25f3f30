"""Service-level goals (``bench.slo``): which requests were served within them, and whether a level met them.

A request is *good* when its time to first token is within ``slo.ttft_s``, its time per output token
(after the first) within ``slo.tpot_s`` and every gap between its chunks within ``slo.itl_s``: a user
sees no stall longer than the bound. Goodput is the good requests a second of the level's wall time, as
SGLang's and vLLM's ``--goodput`` count it. A level *meets* the goals when the p99 of each bounded
latency is within its bound, no request failed and the load did not saturate the server.
"""

from __future__ import annotations

from automodel_spec.bench.result import LevelResult
from automodel_spec.config.schema import SLOConfig

# bench.slo's field -> the level's p99 field it bounds
P99_FIELDS = {"ttft_s": "ttft_p99_s", "itl_s": "itl_p99_s", "tpot_s": "tpot_p99_s"}


def has_goals(slo: SLOConfig | None) -> bool:
    """Whether any latency is bounded."""
    return slo is not None and any(getattr(slo, key) is not None for key in P99_FIELDS)


def request_is_good(rec: dict, slo: SLOConfig) -> bool:
    """A successful streamed request within every bound (module docstring); unstreamed ones are never good:
    their first token was not seen."""
    times = rec.get("chunk_s")
    if not rec.get("ok") or not times:
        return False
    ttft = times[0]
    tpot = (rec["latency_s"] - ttft) / (rec["completion_tokens"] - 1) if rec.get("completion_tokens", 0) > 1 else 0.0
    longest_gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
    return all(bound is None or value <= bound
               for bound, value in ((slo.ttft_s, ttft), (slo.tpot_s, tpot), (slo.itl_s, longest_gap)))


def goals_missed(level: LevelResult, slo: SLOConfig) -> list[str]:
    """What keeps ``level`` from meeting the goals, in words (empty: met)."""
    missed = []
    for key, p99 in P99_FIELDS.items():
        bound, value = getattr(slo, key), getattr(level, p99)
        if bound is None:
            continue
        if value is None:
            missed.append(f"{p99} not measured (requests not streamed)")
        elif value > bound:
            missed.append(f"{p99} {value * 1e3:.2f} ms > {bound * 1e3:.2f} ms")
    if level.failed_requests:
        missed.append(f"{level.failed_requests} request(s) failed")
    if level.saturated:
        missed.append("saturated (the queue grew without bound)")
    return missed


def apply_goals(level: LevelResult, ok: list[dict], slo: SLOConfig) -> None:
    """Set ``good_requests``, ``goodput_rps``, ``slo_met`` and ``slo_missed`` of ``level`` from its successful
    records ``ok``; nothing when no latency is bounded."""
    if not has_goals(slo):
        return
    level.good_requests = sum(request_is_good(r, slo) for r in ok)
    level.goodput_rps = level.good_requests / level.wall_s if level.wall_s > 0 else None
    level.slo_missed = goals_missed(level, slo)
    level.slo_met = not level.slo_missed
