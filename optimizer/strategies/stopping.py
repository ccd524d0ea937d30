"""Stop conditions: when the search ends, checked before each iteration.

Each condition answers with a reason (the run's ``stopReason``) or
None. Limits look at what has happened (iterations, patience, time,
a cancel request); budgets also look ahead at the calls the next
iteration plans, so a run stops *before* a step that could overspend
rather than after it::

    StopConditions
    ├── limits:  IterationLimit, NoImprovement, WallClock, Canceled
    └── budgets: CallBudget, CostBudget
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from optimizer.config import BudgetConfig
from optimizer.state import RunState


class StopCondition(Protocol):
    """One reason to stop."""

    async def check(self, state: RunState, planned_calls: int) -> str | None:
        """The reason to stop before a step planning ``planned_calls``."""
        ...


class IterationLimit:
    """Stop after a number of iterations."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations

    async def check(self, state: RunState, planned_calls: int) -> str | None:
        """``"iterations"`` once ``iterations`` are done."""
        return "iterations" if state.iteration >= self.iterations else None


class NoImprovement:
    """Stop when iterations in a row found nothing better."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    async def check(self, state: RunState, planned_calls: int) -> str | None:
        """``"no_improvement"`` after ``patience`` fruitless iterations."""
        if state.no_improvement >= self.patience:
            return "no_improvement"
        return None


class WallClock:
    """Stop when the search has run for too long.

    Args:
        max_seconds: The time allowed.
        clock: Seconds on a monotonic clock.
        started: ``clock()`` when the search (re)started.
    """

    def __init__(
        self, max_seconds: float, clock: Callable[[], float], started: float
    ) -> None:
        self.max_seconds = max_seconds
        self._clock = clock
        self._started = started

    async def check(self, state: RunState, planned_calls: int) -> str | None:
        """``"wall_time"`` once ``max_seconds`` have passed."""
        elapsed = self._clock() - self._started
        return "wall_time" if elapsed >= self.max_seconds else None


class Canceled:
    """Stop when someone asked the run to stop."""

    def __init__(self, is_canceled: Callable[[], Awaitable[bool]]) -> None:
        self._is_canceled = is_canceled

    async def check(self, state: RunState, planned_calls: int) -> str | None:
        """``"canceled"`` once a cancel was requested."""
        return "canceled" if await self._is_canceled() else None


class CallBudget:
    """Stop when the next step's calls would pass the call budget."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls

    async def check(self, state: RunState, planned_calls: int) -> str | None:
        """``"max_calls"`` when spent + planned calls exceed the budget."""
        if state.calls + planned_calls > self.max_calls:
            return "max_calls"
        return None


class CostBudget:
    """Stop when the next step could pass the cost budget.

    The planned calls are priced at the dearest call seen so far: a
    safe bound, since a step's calls are like the calls already made.
    """

    def __init__(self, max_cost: float) -> None:
        self.max_cost = max_cost

    async def check(self, state: RunState, planned_calls: int) -> str | None:
        """``"max_cost"`` when spent + planned cost exceeds the budget."""
        planned = planned_calls * state.max_call_cost
        return "max_cost" if state.cost + planned > self.max_cost else None


class StopConditions:
    """Limits, then budgets; the first reason found wins.

    Args:
        limits: Conditions on what has happened.
        budgets: Conditions on what the next step plans to spend.
    """

    def __init__(
        self,
        limits: Sequence[StopCondition] = (),
        budgets: Sequence[StopCondition] = (),
    ) -> None:
        self.limits = list(limits)
        self.budgets = list(budgets)

    @classmethod
    def from_budget(
        cls,
        budget: BudgetConfig,
        *,
        clock: Callable[[], float],
        started: float,
        is_canceled: Callable[[], Awaitable[bool]] | None = None,
    ) -> StopConditions:
        """The conditions a run's budget configures.

        Args:
            budget: The run's budget.
            clock: Seconds on a monotonic clock.
            started: ``clock()`` when the search (re)started.
            is_canceled: Whether the run was asked to stop, if it can be.

        Returns:
            The conditions.
        """
        limits: list[StopCondition] = [
            IterationLimit(budget.iterations),
            NoImprovement(budget.patience),
        ]
        if budget.max_wall_seconds is not None:
            limits.append(WallClock(budget.max_wall_seconds, clock, started))
        if is_canceled is not None:
            limits.append(Canceled(is_canceled))
        budgets: list[StopCondition] = []
        if budget.max_calls is not None:
            budgets.append(CallBudget(budget.max_calls))
        if budget.max_cost is not None:
            budgets.append(CostBudget(budget.max_cost))
        return cls(limits, budgets)

    async def check(self, state: RunState, planned_calls: int) -> str | None:
        """The first reason to stop before a step, or None.

        Args:
            state: The run so far.
            planned_calls: The most calls the step may make.

        Returns:
            The reason, or None to go on.
        """
        for condition in self.limits:
            reason = await condition.check(state, planned_calls)
            if reason is not None:
                return reason
        return await self.over_budget(state, planned_calls)

    async def over_budget(
        self, state: RunState, planned_calls: int
    ) -> str | None:
        """The first budget a step planning ``planned_calls`` would pass.

        Args:
            state: The run so far.
            planned_calls: The most calls the step may make.

        Returns:
            ``"max_calls"``, ``"max_cost"`` or None.
        """
        for condition in self.budgets:
            reason = await condition.check(state, planned_calls)
            if reason is not None:
                return reason
        return None
