"""The paired bootstrap: is a candidate really better than the baseline?

Both prompts are scored on the same validation examples, so the honest
question is about the per-example differences: resample them with
replacement, and the spread of their mean gives a percentile interval.
An improvement counts only when the whole interval is above zero.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import fmean
from typing import Any


@dataclass(frozen=True, slots=True)
class Comparison:
    """A candidate against the baseline on the examples both scored.

    Attributes:
        n: Examples scored under both (the pairs compared).
        excluded: Examples left out: unscored on either side, or
            scored on one side only.
        baseline_mean: The baseline's mean over the pairs (None if
            ``n == 0``).
        candidate_mean: The candidate's mean over the pairs.
        difference: ``candidate_mean - baseline_mean``.
        low: Lower end of the interval of the mean difference (None
            when fewer than two pairs: one pair gives no spread).
        high: Upper end of that interval.
        significant: Whether the interval lies strictly above zero.
        confidence: The interval's confidence level, e.g. 0.95.
    """

    n: int
    excluded: int
    baseline_mean: float | None
    candidate_mean: float | None
    difference: float | None
    low: float | None
    high: float | None
    significant: bool
    confidence: float

    def to_doc(self) -> dict[str, Any]:
        """The stored form (camelCase)."""
        return {
            "n": self.n,
            "excluded": self.excluded,
            "baselineMean": self.baseline_mean,
            "candidateMean": self.candidate_mean,
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "significant": self.significant,
            "confidence": self.confidence,
        }


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linearly interpolated."""
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    weight = position - below
    return ordered[below] * (1 - weight) + ordered[above] * weight


def paired_bootstrap(
    baseline: Mapping[str, float | None],
    candidate: Mapping[str, float | None],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    rng: random.Random,
) -> Comparison:
    """Compare two prompts' scores example by example.

    Args:
        baseline: The baseline's score per example id (None: unscored).
        candidate: The candidate's score per example id.
        resamples: Bootstrap resamples drawn.
        confidence: The interval's level, in (0, 1).
        rng: The source of randomness (the same state gives the same
            interval).

    Returns:
        The comparison; with no pairs it has no means and is not
        significant, and with one pair it has no interval.

    Raises:
        ValueError: ``resamples`` is below 1 or ``confidence`` is not
            in (0, 1).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    # Sorted, so the draw does not depend on the mappings' order.
    ids = sorted(set(baseline) | set(candidate))
    pairs = [
        (b, c)
        for i in ids
        if (b := baseline.get(i)) is not None
        and (c := candidate.get(i)) is not None
    ]
    n = len(pairs)
    excluded = len(ids) - n
    if n == 0:
        return Comparison(
            0, excluded, None, None, None, None, None, False, confidence
        )
    baseline_mean = fmean(b for b, _ in pairs)
    candidate_mean = fmean(c for _, c in pairs)
    differences = [c - b for b, c in pairs]
    difference = fmean(differences)
    if n == 1:
        return Comparison(
            1,
            excluded,
            baseline_mean,
            candidate_mean,
            difference,
            None,
            None,
            False,
            confidence,
        )
    # choices() draws indices with one random() each: fast enough for
    # thousands of resamples without numpy.
    means = sorted(
        sum(rng.choices(differences, k=n)) / n for _ in range(resamples)
    )
    tail = (1 - confidence) / 2
    low = _quantile(means, tail)
    high = _quantile(means, 1 - tail)
    return Comparison(
        n,
        excluded,
        baseline_mean,
        candidate_mean,
        difference,
        low,
        high,
        low > 0,
        confidence,
    )
