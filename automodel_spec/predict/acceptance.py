"""Accept length of a shorter draft, from the acceptance histogram of a longer one.

SGLang counts, per request, the verify rounds by how many drafted tokens each accepted (the bonus
token not counted): ``spec_correct_drafts_histogram``. A chain of ``s`` steps accepts ``min(K, s)``
drafts in a round where the chain of ``S >= s`` steps accepted ``K``: its first ``s`` drafts are the
same tokens, drawn by the same draft model from the same context, and each is verified against the
same target distribution. So ``P(accept >= k)`` for ``k <= s`` carries over exactly, and the shorter
chain's accept length follows (``predict_accept_length``). For trees (topk > 1) SGLang keeps the
``num_draft_tokens - 1`` best-scored nodes of the draft's beam; a shorter tree of the same topk keeps
its best nodes among the same candidates up to its depth, so truncating the long tree's accepted
depth is an approximation (exact where both trees keep every candidate up to the shorter depth).

A measured accept length counts every token of a request over its verify rounds, the first token
(from the prefill, no verify round) included and the last round cut at ``max_new_tokens``; the
prediction reproduces both (``expected_rounds``), so that a chain that accepts everything predicts
``128 / ceil(127 / (s + 1))`` rather than ``s + 1`` for 128 output tokens.
"""

from __future__ import annotations

import math


def survival(histogram: list[int] | list[float]) -> list[float]:
    """``P(K >= k)`` for ``k = 0 .. len(histogram) - 1`` from counts of rounds by accepted drafts ``K``."""
    total = float(sum(histogram))
    if total <= 0:
        raise ValueError("an acceptance histogram needs at least one verify round")
    out, left = [], total
    for count in histogram:
        out.append(left / total)
        left -= count
    return out


def round_tokens(surv: list[float], steps: int) -> dict[int, float]:
    """Distribution of tokens one round emits (``min(K, steps) + 1``) for a draft cut at ``steps``."""
    s = [surv[k] if k < len(surv) else 0.0 for k in range(steps + 2)]
    dist = {k + 1: s[k] - s[k + 1] for k in range(steps)}
    dist[steps + 1] = s[steps]
    return {x: p for x, p in dist.items() if p > 0}


def expected_rounds(tokens: int, dist: dict[int, float]) -> float:
    """Expected verify rounds to emit ``tokens`` tokens when each round emits ``x`` with ``dist[x]``."""
    e = [0.0] * (tokens + 1)
    for n in range(1, tokens + 1):
        e[n] = 1.0 + sum(p * e[max(0, n - x)] for x, p in dist.items())
    return e[tokens]


def predict_accept_length(surv: list[float], steps: int, output_tokens: float) -> float:
    """Accept length (output tokens / verify rounds) of a draft cut at ``steps``.

    Args:
        surv: ``P(K >= k)`` of the measured (longer) draft.
        steps: the depth of the draft to predict (``<= len(surv) - 1`` for an exact chain prediction).
        output_tokens: tokens per request (``max_new_tokens`` with ``ignore_eos``).
    """
    n = max(1, round(output_tokens))
    if n == 1:
        return 1.0
    return n / expected_rounds(n - 1, round_tokens(surv, steps))


def fit_survival(anchors: list[tuple[int, float]], output_tokens: float) -> list[float]:
    """A survival ``P(K >= k)`` through measured (steps, accept length) pairs of one topk, without histograms.

    Between two measured depths, acceptance falls by one rate per depth (geometric), the rate chosen
    so that the deeper point's accept length is reproduced. The fallback when points reported no
    histogram (SGLang before 0.5.10, a schema-2 result): accept lengths alone cannot say how
    acceptance falls within a segment, so this is an assumption, named as such where it is used.
    """
    surv = [1.0]
    for steps, accept_length in sorted(anchors):
        if steps < len(surv):
            continue  # a shallower depth than one already fitted (two points of the same steps)
        start, base = len(surv), surv[-1]
        lo, hi = 0.0, 1.0
        for _ in range(50):
            mid = (lo + hi) / 2
            trial = surv + [base * mid ** (j - start + 1) for j in range(start, steps + 1)]
            if predict_accept_length(trial, steps, output_tokens) < accept_length:
                lo = mid
            else:
                hi = mid
        rate = (lo + hi) / 2
        surv = surv + [base * rate ** (j - start + 1) for j in range(start, steps + 1)]
    return surv


def interpolate_topk(low: tuple[int, list[float]], high: tuple[int, list[float]], topk: int) -> list[float]:
    """Survival of an unmeasured topk between two measured ones, geometric in ``log(topk)`` per depth.

    An assumption, not a derivation: a wider beam holds more of the target's likely tokens at each depth.
    """
    (k0, s0), (k1, s1) = low, high
    w = 0.0 if k1 == k0 else (math.log(topk) - math.log(k0)) / (math.log(k1) - math.log(k0))
    n = min(len(s0), len(s1))
    return [(s0[j] ** (1 - w)) * (s1[j] ** w) if s0[j] > 0 and s1[j] > 0 else 0.0 for j in range(n)]
