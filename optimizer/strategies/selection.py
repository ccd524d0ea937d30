"""Parent selection: which candidate the next iteration improves.

:class:`ParetoSelector` keeps the search diverse the way GEPA does:
every candidate that is best on at least one validation example may be
chosen, more often the more examples it leads, so a prompt that solves
a kind of question the others miss keeps being improved even while its
mean score trails. :class:`BestSelector` always takes the single best
(a baseline for benchmarks).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from optimizer.records import Candidate


class CandidateSelector(Protocol):
    """Chooses the parent of the next iteration."""

    def select(
        self, candidates: Sequence[Candidate], rng: random.Random
    ) -> Candidate:
        """One of ``candidates`` (validated ones, at least one scored)."""
        ...


def _score(candidate: Candidate) -> float:
    score = candidate.validation_score
    return float("-inf") if score is None else score


def best_candidate(candidates: Sequence[Candidate]) -> Candidate:
    """The highest mean validation score (the first on a tie).

    Args:
        candidates: Candidates, in creation order.

    Returns:
        The best; an unscored candidate ranks below every scored one.

    Raises:
        ValueError: No candidates.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    # max() keeps the first of equal keys, so earlier candidates win ties.
    return max(candidates, key=_score)


def _fronts(candidates: Sequence[Candidate]) -> list[set[str]]:
    """Per validation example, the ids of the candidates that lead it."""
    best: dict[str, float] = {}
    for candidate in candidates:
        for example_id, score in (candidate.validation or {}).items():
            if score is not None and score > best.get(example_id, 0.0):
                best[example_id] = score
    # An example nobody scores above zero is led by no one: all failing
    # it is no sign of a strength worth keeping.
    fronts: dict[str, set[str]] = {example_id: set() for example_id in best}
    for candidate in candidates:
        for example_id, score in (candidate.validation or {}).items():
            if example_id in best and score == best[example_id]:
                fronts[example_id].add(candidate.id)
    return [fronts[example_id] for example_id in sorted(fronts)]


def _undominated(
    candidates: Sequence[Candidate], fronts: list[set[str]]
) -> set[str]:
    """Drop leaders whose every lead another remaining leader shares.

    Weakest first, as GEPA does, so of two candidates that lead the same
    examples the one with the better mean survives.
    """
    leaders = {cid for front in fronts for cid in front}
    order = [c.id for c in sorted(candidates, key=_score) if c.id in leaders]
    remaining = set(leaders)
    changed = True
    while changed:
        changed = False
        for cid in order:
            if cid not in remaining:
                continue
            others = remaining - {cid}
            if all(front & others for front in fronts if cid in front):
                remaining.discard(cid)
                changed = True
                break
    return remaining


def pareto_front(
    candidates: Sequence[Candidate],
) -> list[tuple[Candidate, int]]:
    """The candidates that lead some validation example, and how many.

    Args:
        candidates: Validated candidates, in creation order.

    Returns:
        ``(candidate, examples led)`` in creation order, dominated
        leaders left out; empty when no candidate scores above zero
        anywhere.
    """
    fronts = _fronts(candidates)
    keep = _undominated(candidates, fronts)
    led = {cid: sum(cid in front for front in fronts) for cid in keep}
    return [(c, led[c.id]) for c in candidates if c.id in keep]


class ParetoSelector:
    """GEPA's selection: a leader, weighted by the examples it leads."""

    def select(
        self, candidates: Sequence[Candidate], rng: random.Random
    ) -> Candidate:
        """Sample a Pareto-front candidate.

        Args:
            candidates: Validated candidates, in creation order.
            rng: The iteration's random source.

        Returns:
            A front member, drawn with weight = examples it leads; the
            best candidate when no one leads any example.

        Raises:
            ValueError: No candidates.
        """
        front = pareto_front(candidates)
        if not front:
            return best_candidate(candidates)
        members = [candidate for candidate, _ in front]
        weights = [led for _, led in front]
        return rng.choices(members, weights=weights)[0]


class BestSelector:
    """Always the best mean validation score (greedy hill climbing)."""

    def select(
        self, candidates: Sequence[Candidate], rng: random.Random
    ) -> Candidate:
        """The best candidate.

        Args:
            candidates: Validated candidates, in creation order.
            rng: Unused: the choice is not random.

        Returns:
            The best (the first on a tie).

        Raises:
            ValueError: No candidates.
        """
        del rng
        return best_candidate(candidates)
