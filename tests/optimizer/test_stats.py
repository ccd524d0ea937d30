"""The paired bootstrap on known cases."""

from __future__ import annotations

import random
import time

import pytest

from optimizer.stats import Comparison, paired_bootstrap


def scores(values: list[float | None]) -> dict[str, float | None]:
    return {f"e{i}": v for i, v in enumerate(values)}


def interval(result: Comparison) -> tuple[float, float, float]:
    """``(low, difference, high)``, which must all be known."""
    assert result.low is not None and result.high is not None
    assert result.difference is not None
    return result.low, result.difference, result.high


def test_identical_scores_show_no_difference() -> None:
    same = scores([1, 0, 1, 1, 0, 0.5] * 5)
    result = paired_bootstrap(same, same, rng=random.Random(0))
    assert result.difference == 0
    assert result.low == result.high == 0
    assert not result.significant


def test_every_example_improved_is_significant() -> None:
    rng = random.Random(7)
    baseline = scores([rng.random() * 0.5 for _ in range(40)])
    candidate = {
        k: (v or 0) + 0.2 + rng.random() * 0.1 for k, v in baseline.items()
    }
    result = paired_bootstrap(baseline, candidate, rng=random.Random(0))
    assert result.n == 40
    low, difference, high = interval(result)
    assert 0.2 <= low <= difference <= high <= 0.3
    assert result.significant
    assert result.baseline_mean is not None
    assert result.candidate_mean == pytest.approx(
        result.baseline_mean + difference
    )


def test_mixed_results_are_not_significant() -> None:
    baseline = scores([0, 1] * 20)
    candidate = scores([1, 0] * 20)
    result = paired_bootstrap(baseline, candidate, rng=random.Random(0))
    assert result.difference == 0
    assert result.low is not None and result.low < 0
    assert result.high is not None and result.high > 0
    assert not result.significant


def test_worse_candidate_is_not_significant() -> None:
    result = paired_bootstrap(
        scores([1.0] * 10), scores([0.0] * 10), rng=random.Random(0)
    )
    assert result.difference == -1
    assert not result.significant


def test_unscored_examples_are_excluded_on_either_side() -> None:
    baseline = {"a": 0.0, "b": None, "c": 0.0, "d": 0.5, "only-b": 1.0}
    candidate = {"a": 1.0, "b": 1.0, "c": None, "d": 1.0, "only-c": 0.0}
    result = paired_bootstrap(baseline, candidate, rng=random.Random(0))
    assert result.n == 2  # a and d
    assert result.excluded == 4  # b, c, only-b, only-c
    assert result.baseline_mean == 0.25
    assert result.candidate_mean == 1.0
    assert result.difference == 0.75


def test_same_seed_same_interval_whatever_the_order() -> None:
    rng = random.Random(3)
    baseline = scores([rng.random() for _ in range(50)])
    candidate = scores([rng.random() for _ in range(50)])
    reordered = dict(reversed(list(candidate.items())))
    first = paired_bootstrap(baseline, candidate, rng=random.Random(11))
    second = paired_bootstrap(baseline, reordered, rng=random.Random(11))
    other = paired_bootstrap(baseline, candidate, rng=random.Random(12))
    assert first == second
    assert (first.low, first.high) != (other.low, other.high)


def test_no_pairs_is_no_evidence() -> None:
    result = paired_bootstrap(
        {"a": None}, {"a": 1.0, "b": 1.0}, rng=random.Random(0)
    )
    assert result == Comparison(
        n=0,
        excluded=2,
        baseline_mean=None,
        candidate_mean=None,
        difference=None,
        low=None,
        high=None,
        significant=False,
        confidence=0.95,
    )
    assert paired_bootstrap({}, {}, rng=random.Random(0)).n == 0


def test_one_pair_has_a_difference_but_no_interval() -> None:
    result = paired_bootstrap({"a": 0.0}, {"a": 1.0}, rng=random.Random(0))
    assert result.n == 1
    assert result.difference == 1.0
    assert result.low is None and result.high is None
    assert not result.significant


def test_wider_confidence_gives_a_wider_interval() -> None:
    rng = random.Random(5)
    baseline = scores([rng.random() for _ in range(60)])
    candidate = scores([rng.random() for _ in range(60)])
    narrow = paired_bootstrap(
        baseline, candidate, confidence=0.5, rng=random.Random(1)
    )
    wide = paired_bootstrap(
        baseline, candidate, confidence=0.99, rng=random.Random(1)
    )
    wide_low, _, wide_high = interval(wide)
    narrow_low, _, narrow_high = interval(narrow)
    assert wide_low < narrow_low < narrow_high < wide_high


def test_to_doc_is_camel_case() -> None:
    doc = paired_bootstrap(
        {"a": 0.0, "b": 0.5}, {"a": 1.0, "b": 1.0}, rng=random.Random(0)
    ).to_doc()
    assert set(doc) == {
        "n",
        "excluded",
        "baselineMean",
        "candidateMean",
        "difference",
        "low",
        "high",
        "significant",
        "confidence",
    }
    assert doc["baselineMean"] == 0.25


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap({}, {}, resamples=0, rng=random.Random(0))
    for confidence in (0.0, 1.0):
        with pytest.raises(ValueError, match="confidence"):
            paired_bootstrap(
                {}, {}, confidence=confidence, rng=random.Random(0)
            )


def test_fast_enough_for_a_large_validation_set() -> None:
    rng = random.Random(0)
    baseline = scores([rng.random() for _ in range(500)])
    candidate = scores([rng.random() for _ in range(500)])
    # The CPU time of this thread, which other work on a loaded machine
    # does not inflate (the wall clock does); it takes ~0.05 s.
    start = time.thread_time()
    paired_bootstrap(baseline, candidate, resamples=2000, rng=rng)
    assert time.thread_time() - start < 1.0
