import random
from collections import Counter

import pytest

from optimizer.config import BudgetConfig
from optimizer.records import Candidate, Example
from optimizer.state import RunState
from optimizer.strategies.sampling import EpochSampler
from optimizer.strategies.selection import (
    BestSelector,
    ParetoSelector,
    best_candidate,
    pareto_front,
)
from optimizer.strategies.stopping import (
    CallBudget,
    Canceled,
    CostBudget,
    IterationLimit,
    NoImprovement,
    StopConditions,
    WallClock,
)

pytestmark = pytest.mark.anyio


def _candidate(cid: str, scores: list[float | None]) -> Candidate:
    return Candidate(
        cid,
        f"prompt {cid}",
        validation={f"v{i}": s for i, s in enumerate(scores)},
    )


# Selection ----------------------------------------------------------------


def test_pareto_front_keeps_every_example_leader() -> None:
    a = _candidate("c0", [1, 1, 0, 0])  # mean 0.5, leads v0 v1
    b = _candidate("c1", [0, 1, 1, 1])  # mean 0.75, leads v1 v2 v3
    c = _candidate("c2", [0, 0, 1, 0])  # dominated by c1
    front = pareto_front([a, b, c])
    assert [(cand.id, led) for cand, led in front] == [("c0", 2), ("c1", 3)]


def test_pareto_front_drops_a_weaker_duplicate_leader() -> None:
    a = _candidate("c0", [1, 0, 0])
    b = _candidate("c1", [1, 0, 0.5])  # leads everything a leads, and more
    assert [cand.id for cand, _ in pareto_front([a, b])] == ["c1"]


def test_pareto_front_ignores_examples_nobody_gets_right() -> None:
    a = _candidate("c0", [0, 0, None])
    b = _candidate("c1", [0, 0, 0])
    assert pareto_front([a, b]) == []


def test_pareto_selector_samples_by_examples_led() -> None:
    a = _candidate("c0", [1, 0, 0, 0])
    b = _candidate("c1", [0, 1, 1, 1])
    rng = random.Random(7)
    picks = Counter(
        ParetoSelector().select([a, b], rng).id for _ in range(4000)
    )
    assert set(picks) == {"c0", "c1"}
    assert 0.2 < picks["c0"] / 4000 < 0.3


def test_pareto_selector_is_deterministic_in_its_rng() -> None:
    cands = [
        _candidate("c0", [1, 0, 0]),
        _candidate("c1", [0, 1, 0]),
        _candidate("c2", [0, 0, 1]),
    ]
    first = [ParetoSelector().select(cands, random.Random(s)).id for s in "ab"]
    again = [ParetoSelector().select(cands, random.Random(s)).id for s in "ab"]
    assert first == again


def test_pareto_selector_falls_back_to_the_best() -> None:
    cands = [_candidate("c0", [0, None]), _candidate("c1", [0, 0])]
    assert ParetoSelector().select(cands, random.Random(0)).id == "c0"


def test_best_selector_and_ties() -> None:
    cands = [
        _candidate("c0", [1, 0]),
        _candidate("c1", [0, 1]),
        _candidate("c2", [None, None]),
    ]
    assert BestSelector().select(cands, random.Random(0)).id == "c0"
    assert best_candidate([cands[2], cands[1]]).id == "c1"
    with pytest.raises(ValueError):
        best_candidate([])


# Sampling -----------------------------------------------------------------


def _train(n: int) -> list[Example]:
    return [Example(f"t{i}", {"input": str(i)}) for i in range(n)]


def test_epoch_sampler_covers_each_epoch_before_repeating() -> None:
    sampler = EpochSampler(_train(10), 3, seed=1)
    assert sampler.batches_per_epoch == 4
    for epoch in range(3):
        seen: list[str] = []
        for batch in range(4):
            iteration = epoch * 4 + batch + 1
            minibatch = sampler.sample(iteration, random.Random(0))
            assert len(minibatch) == 3
            assert len({e.id for e in minibatch}) == 3
            seen += [e.id for e in minibatch]
        assert {f"t{i}" for i in range(10)} <= set(seen)


def test_epoch_sampler_depends_only_on_seed_and_iteration() -> None:
    train = _train(11)
    walked = EpochSampler(train, 4, seed=5)
    in_order = [walked.sample(i) for i in range(1, 13)]
    fresh = [
        EpochSampler(train, 4, seed=5).sample(i) for i in range(12, 0, -1)
    ]
    assert in_order == fresh[::-1]
    other_seed = [
        EpochSampler(train, 4, seed=6).sample(i) for i in range(1, 4)
    ]
    assert other_seed != in_order[:3]
    # Epochs are shuffled apart.
    assert walked.epoch_order(0) != walked.epoch_order(1)


def test_epoch_sampler_caps_the_size_and_rejects_nonsense() -> None:
    sampler = EpochSampler(_train(3), 8)
    assert len(sampler.sample(1)) == 3
    with pytest.raises(ValueError):
        sampler.sample(0)
    with pytest.raises(ValueError):
        EpochSampler([], 2)


# Stopping -----------------------------------------------------------------


async def test_limits() -> None:
    state = RunState(iteration=3, no_improvement=2)
    assert await IterationLimit(3).check(state, 0) == "iterations"
    assert await IterationLimit(4).check(state, 0) is None
    assert await NoImprovement(2).check(state, 0) == "no_improvement"
    assert await NoImprovement(3).check(state, 0) is None
    now = [100.0]
    clock = WallClock(10, lambda: now[0], started=95.0)
    assert await clock.check(state, 0) is None
    now[0] = 105.0
    assert await clock.check(state, 0) == "wall_time"


async def test_canceled_asks_its_predicate() -> None:
    flag = [False]

    async def is_canceled() -> bool:
        return flag[0]

    condition = Canceled(is_canceled)
    assert await condition.check(RunState(), 0) is None
    flag[0] = True
    assert await condition.check(RunState(), 0) == "canceled"


async def test_call_budget_looks_at_the_next_step() -> None:
    state = RunState(calls=90)
    assert await CallBudget(100).check(state, 10) is None
    assert await CallBudget(100).check(state, 11) == "max_calls"


async def test_cost_budget_prices_planned_calls_at_the_dearest() -> None:
    state = RunState(calls=10, cost=0.5, max_call_cost=0.1)
    assert await CostBudget(1.0).check(state, 5) is None
    assert await CostBudget(1.0).check(state, 6) == "max_cost"
    # Nothing observed yet: nothing to price with.
    assert await CostBudget(1.0).check(RunState(), 10**6) is None


async def test_stop_conditions_from_budget() -> None:
    budget = BudgetConfig(
        iterations=5, max_calls=50, max_cost=1.0, max_wall_seconds=60
    )

    async def never() -> bool:
        return False

    stops = StopConditions.from_budget(
        budget, clock=lambda: 0.0, started=0.0, is_canceled=never
    )
    assert len(stops.limits) == 4
    assert len(stops.budgets) == 2
    assert await stops.check(RunState(), 50) is None
    assert await stops.check(RunState(), 51) == "max_calls"
    assert await stops.over_budget(RunState(iteration=5), 1) is None
    assert await stops.check(RunState(iteration=5), 51) == "iterations"
    bare = StopConditions.from_budget(
        BudgetConfig(), clock=lambda: 0.0, started=0.0
    )
    assert bare.budgets == []
    assert await bare.check(RunState(), 10**9) is None
