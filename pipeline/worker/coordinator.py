"""Cluster-wide model limits, shared out among the workers that call them.

Each worker (a *holder*) syncs with the one :class:`LimitsCoordinator`
every fraction of a second, reporting per model its demand, its calls in
flight and the concurrency it currently enforces; it gets back its share.
Shares follow demand (water-filling), and a share only grows out of
capacity that no other holder may still be using: a holder told to
shrink keeps its reservation until it reports that it has. So the sum of
calls in flight never exceeds a model's ``maxConcurrency``, whatever the
number of workers. Rates (rpm, tpm) are split in proportion to the
concurrency shares; each holder's token bucket holds at most a second of
its rate, which bounds any overshoot while shares move.

A holder that stops syncing is forgotten after ``holder_ttl_s`` (a dead
worker's calls died with its process). A coordinator that replaces one
that died first listens for one TTL, growing nobody, so it never hands
out capacity a surviving holder is still using.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SYNC_INTERVAL_S = 0.5
HOLDER_TTL_S = 10.0
#: Seconds between changes of who gets the odd slots of a model.
TURN_S = 2.0


@dataclass
class _Holder:
    demand: int = 0
    in_flight: int = 0
    enforced: int = 0
    granted: int = 0
    seen: float = 0.0

    @property
    def reserved(self) -> int:
        return max(self.granted, self.enforced, self.in_flight)


@dataclass
class _ModelState:
    concurrency: int
    rpm: float | None
    tpm: float | None
    holders: dict[str, _Holder] = field(default_factory=dict)


def water_fill(
    capacity: int, demands: dict[str, int], turn: int = 0
) -> dict[str, int]:
    """Split ``capacity`` by demand; what nobody wants is spread evenly.

    When the capacity does not divide evenly, the holders that get the
    odd slots change with ``turn`` (the coordinator advances it every
    :data:`TURN_S`), so a holder is never starved by a tie: with one
    slot and two busy holders, each gets it in turn.
    """
    shares = dict.fromkeys(demands, 0)
    remaining = capacity
    names = sorted(demands)
    if names:
        start = turn % len(names)
        names = names[start:] + names[:start]
    wanting = [h for h in names if demands[h] > 0]
    while remaining > 0 and wanting:
        each = max(1, remaining // len(wanting))
        for holder in list(wanting):
            give = min(each, demands[holder] - shares[holder], remaining)
            shares[holder] += give
            remaining -= give
            if shares[holder] >= demands[holder]:
                wanting.remove(holder)
            if remaining == 0:
                break
    everyone = names
    index = 0
    while remaining > 0 and everyone:
        shares[everyone[index % len(everyone)]] += 1
        remaining -= 1
        index += 1
    return shares


class LimitsCoordinator:
    """The authority on how much of each model each holder may use."""

    def __init__(
        self,
        *,
        holder_ttl_s: float = HOLDER_TTL_S,
        restarted: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the coordinator.

        Args:
            holder_ttl_s: Silence after which a holder is presumed dead.
            restarted: Whether this replaces a coordinator that died
                (holders may be mid-call): listen before granting.
            clock: Monotonic time source.
        """
        self._clock = clock
        self._ttl = holder_ttl_s
        self._warm_until = clock() + holder_ttl_s if restarted else 0.0
        self._models: dict[str, _ModelState] = {}

    def sync(
        self, holder: str, reports: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Take a holder's reports and give back its shares.

        Args:
            holder: A unique, stable id of the worker.
            reports: Per model: ``limits`` (``maxConcurrency``, ``rpm``,
                ``tpm``), ``demand``, ``inFlight``, ``enforced``.

        Returns:
            Per model: ``concurrency``, ``rpm``, ``tpm`` for the holder.
        """
        now = self._clock()
        answer: dict[str, dict[str, Any]] = {}
        for model, report in reports.items():
            state = self._state(model, report["limits"])
            entry = state.holders.setdefault(holder, _Holder())
            entry.demand = int(report.get("demand", 0))
            entry.in_flight = int(report.get("inFlight", 0))
            entry.enforced = int(report.get("enforced", 0))
            entry.seen = now
            self._expire(state, now)
            answer[model] = self._grant(state, holder, now)
        return answer

    def release(self, holder: str) -> None:
        """Forget a holder that is shutting down cleanly."""
        for state in self._models.values():
            state.holders.pop(holder, None)

    def snapshot(self) -> dict[str, Any]:
        """Current state, for tests and the dashboard."""
        return {
            model: {
                "concurrency": state.concurrency,
                "holders": {
                    name: {
                        "granted": h.granted,
                        "enforced": h.enforced,
                        "inFlight": h.in_flight,
                        "demand": h.demand,
                    }
                    for name, h in state.holders.items()
                },
            }
            for model, state in self._models.items()
        }

    def _state(self, model: str, limits: dict[str, Any]) -> _ModelState:
        concurrency = int(limits["maxConcurrency"])
        rpm, tpm = limits.get("rpm"), limits.get("tpm")
        state = self._models.get(model)
        if state is None:
            state = _ModelState(concurrency, rpm, tpm)
            self._models[model] = state
        else:
            state.concurrency, state.rpm, state.tpm = concurrency, rpm, tpm
        return state

    def _expire(self, state: _ModelState, now: float) -> None:
        for name in [
            n for n, h in state.holders.items() if now - h.seen > self._ttl
        ]:
            del state.holders[name]

    def _grant(
        self, state: _ModelState, holder: str, now: float
    ) -> dict[str, Any]:
        entry = state.holders[holder]
        targets = water_fill(
            state.concurrency,
            {name: h.demand for name, h in state.holders.items()},
            turn=int(now // TURN_S),
        )
        target = targets[holder]
        others = sum(
            h.reserved for name, h in state.holders.items() if name != holder
        )
        grant = max(0, min(target, state.concurrency - others))
        if now < self._warm_until:
            # Restarted: holders we have not heard from yet may be using
            # capacity. Never grow a holder beyond what it enforces.
            grant = min(grant, entry.enforced)
        entry.granted = grant
        fraction = grant / state.concurrency if state.concurrency else 0.0
        return {
            "concurrency": grant,
            "rpm": None if state.rpm is None else state.rpm * fraction,
            "tpm": None if state.tpm is None else state.tpm * fraction,
        }
