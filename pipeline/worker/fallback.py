"""Model fallbacks: when an item leaves a model whose provider is down.

The rule: an item moves to the next fallback of the model its client
asked for when **the retry policy gives up on it** (its attempts on the
current model are used up) **and the last error says the provider is
down or out of capacity** (:data:`PROVIDER_DOWN`: 5xx, connection
errors, timeouts, cut streams, and 429s, which are retried first like
any rate limit). An error about the request (other 4xx, a content
filter), a bad key and anything untyped never move an item: the next
model would refuse it too, or the fault is ours.

The routes are the job's (:mod:`pipeline.jobs.fallback_routes`: fixed
at submission, none when the client sent ``fallbacks: false``). Each
model of the route is tried once, in order, with the item's full
``maxAttempts``: a move resets ``attempts`` to 0, so an item makes at
most ``maxAttempts`` calls per model. After the last fallback the item
fails with its last error, as it would without fallbacks.

A move is a retry write (PROCESSING -> PENDING, guarded by the lease,
no counter moves) that also changes the item's ``model`` and records
``requestedModel`` and ``fallbackFrom``. A model of this worker's
provider is queued here like a retry; one of another provider is handed
over (:mod:`pipeline.worker.handoffs`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.jobs.fallback_routes import Route
from pipeline.logging import get_logger
from pipeline.states import Status
from pipeline.store.document_collection import utcnow
from pipeline.worker.backlog import Backlog
from pipeline.worker.handoffs import (
    Handoff,
    SignalHandoff,
    inbox_id,
    window_owner,
)
from pipeline.worker.item_store import Item, Outcome
from pipeline.worker.retry import RetryDecision
from providers.errors import RateLimitError, TransientError

log = get_logger(__name__)

#: Errors that say the provider, not the request, is the problem.
PROVIDER_DOWN = (TransientError, RateLimitError)


def provider_down(error: BaseException) -> bool:
    """Whether an error says the provider is down or out of capacity."""
    return isinstance(error, PROVIDER_DOWN)


def next_route(
    item: Mapping[str, Any],
    error: BaseException,
    decision: RetryDecision,
    routes: Mapping[str, Sequence[Route]],
) -> Route | None:
    """Where an item goes after a failed call, if anywhere (the rule).

    Args:
        item: The item (``model``, and ``requestedModel`` and
            ``fallbackFrom`` once it moved).
        error: What the call raised.
        decision: The retry policy's decision on it.
        routes: The job's fallback routes.

    Returns:
        The next untried fallback of the requested model, or None: the
        item is retried, fails, or has no fallback left.
    """
    if decision.retry or not provider_down(error):
        return None
    requested = item.get("requestedModel") or item["model"]
    tried = {requested, item["model"], *(item.get("fallbackFrom") or ())}
    for route in routes.get(requested, ()):
        if route.model not in tried:
            return route
    return None


class FallbackRouter:
    """A worker's side of fallbacks: decide, then queue or hand over."""

    def __init__(
        self,
        provider: str,
        replicas: int,
        backlog: Backlog,
        signal: SignalHandoff | None = None,
    ) -> None:
        """Route one worker's failed items.

        Args:
            provider: The worker's provider.
            replicas: Worker replicas per provider.
            backlog: Its backlog (the jobs' routes are in their tracks).
            signal: Tells another provider's worker it has items; None
                leaves them to its poll.
        """
        self._provider = provider
        self._replicas = replicas
        self._backlog = backlog
        self._signal = signal
        self._due: set[tuple[str, int]] = set()
        self.moved = 0

    def outcome(
        self,
        item: Item,
        error: BaseException,
        decision: RetryDecision,
        record: dict[str, Any],
    ) -> Outcome | None:
        """The outcome moving an item to its next fallback, or None.

        Args:
            item: The claimed item.
            error: What its call raised.
            decision: The retry policy's decision.
            record: The error record kept on the item.
        """
        track = self._backlog.jobs.get(item["jobId"])
        if track is None:
            return None
        route = next_route(item, error, decision, track.fallback_routes)
        if route is None:
            return None
        requested = item.get("requestedModel") or item["model"]
        tried = (*(item.get("fallbackFrom") or ()), item["model"])
        inbox = None
        if route.provider != self._provider:
            replica = window_owner(item["jobId"], item["seq"], self._replicas)
            inbox = inbox_id(route.provider, replica)
        log.warning(
            "item_fallback",
            error_type=record["type"],
            error=record["message"],
            to_model=route.model,
            to_provider=route.provider,
        )
        return Outcome(
            item=item,
            status=Status.PENDING,
            error=record,
            next_attempt_at=utcnow(),
            attempts=0,
            handoff=Handoff(
                model=route.model,
                provider=route.provider,
                requested=requested,
                tried=tried,
                inbox=inbox,
            ),
        )

    def settle(self, outcome: Outcome) -> bool:
        """After a written outcome: apply its move to the item in memory.

        Returns:
            True when another provider's worker takes the item over (it
            is signalled): this worker must not queue it.
        """
        handoff = outcome.handoff
        if handoff is None:
            return False
        self.moved += 1
        item = outcome.item
        if handoff.inbox is None:
            item.update(
                {
                    "model": handoff.model,
                    "requestedModel": handoff.requested,
                    "fallbackFrom": list(handoff.tried),
                    "attempts": 0,
                }
            )
            return False
        replica = int(handoff.inbox.rpartition("/")[2])
        if self._signal is not None:
            if not self._due:
                # Once per inbox for all the items of a write.
                asyncio.get_running_loop().call_soon(self._send_signals)
            self._due.add((handoff.provider, replica))
        return True

    def _send_signals(self) -> None:
        due, self._due = self._due, set()
        for provider, replica in sorted(due):
            try:
                if self._signal is not None:
                    self._signal(provider, replica)
            except Exception as error:
                # The receiver's poll finds the items anyway.
                log.warning(
                    "handoff_signal_failed",
                    provider=provider,
                    error=str(error),
                )
