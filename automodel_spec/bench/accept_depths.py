"""Acceptance depth by depth: the served histogram of rounds by drafts accepted against the reference's,
and the reference against what training measured per depth (``trained_depths``).

An average accept length can hide a draft that serves its first position well and the rest badly;
the share of rounds that accepted at least ``d`` drafts, at each ``d``, cannot.
"""

from __future__ import annotations

import math

from automodel_spec.bench.reference import TOLERANCE


def survival(histogram: list[int]) -> list[float]:
    """``out[d - 1]``: the share of rounds that accepted at least ``d`` drafts (``d = 1..``)."""
    total = sum(histogram)
    return [sum(histogram[d:]) / total for d in range(1, len(histogram))] if total else []


def histogram_distance(a: list[int], b: list[int]) -> float | None:
    """Total variation distance between two histograms of rounds by drafts accepted (0 to 1)."""
    ta, tb = sum(a), sum(b)
    if not ta or not tb:
        return None
    width = max(len(a), len(b))
    pa, pb = a + [0] * (width - len(a)), b + [0] * (width - len(b))
    return 0.5 * sum(abs(x / ta - y / tb) for x, y in zip(pa, pb, strict=True))


def depth_verdict(served: list[int] | None, reference: list[int] | None, *,
                  tolerance: float = TOLERANCE) -> tuple[bool | None, str | None]:
    """(no depth falls short?, the sentence) for the served and reference histograms of rounds by
    drafts accepted.

    At each depth ``d`` the served share of rounds accepting at least ``d`` drafts may fall below the
    reference's by ``tolerance`` of it or by three standard errors of the two shares (rounds are
    counted, so a share measured on few rounds moves by chance), whichever is larger. An average can
    hide a draft that serves its first position well and the rest badly; this cannot.
    """
    if not served or not reference or not sum(served) or not sum(reference):
        return None, None
    s, r = survival(served), survival(reference)
    ns, nr = sum(served), sum(reference)
    short = []
    for d, (x, y) in enumerate(zip(s, r, strict=False), start=1):
        margin = max(tolerance * y, 3 * math.sqrt(max(y * (1 - y), 1e-12) * (1 / ns + 1 / nr)))
        if x < y - margin:
            short.append(f"depth {d}: {x:.2f} of rounds served vs {y:.2f} reference")
    dist = histogram_distance(served, reference)
    if short:
        return False, (f"per depth, the served acceptance falls short (distance {dist:.2f}): " + "; ".join(short)
                       + ": the draft serves its later positions worse than as trained")
    return True, f"every depth within sampling error of the reference (distance {dist:.2f})"


TRAINED_TOLERANCE = 0.2  # training's figures come from its own data, not the bench's prompts: only a large gap


def trained_depth_verdict(reference: list[float], trained) -> tuple[bool, str]:
    """(the reference reaches what training measured at each depth?, the sentence) for the reference's
    chain survival per depth and training's (``trained_depths.TrainedDepths``).

    A warning, not a failure: training measured its own data, the reference the bench's prompts; a
    depth more than ``TRAINED_TOLERANCE`` of training's figure below it says the export, as SGLang serves
    it, does not compute the draft as trained at that depth (or that the prompts are far from training's).
    """
    short = [f"depth {d}: {x:.2f} reference vs {y:.2f} in training" for d, (x, y) in
             enumerate(zip(reference, trained.survival, strict=False), start=1) if x < y * (1 - TRAINED_TOLERANCE)]
    where = f"{trained.how}, {trained.source}"
    if short:
        return False, f"below training's figures ({where}): " + "; ".join(short)
    return True, f"every depth within {TRAINED_TOLERANCE:.0%} of training's figures ({where})"
