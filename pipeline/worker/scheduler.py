"""The scheduler: from queued items to running calls, within the limits.

One loop, woken whenever something changes (a claim landed, a call
ended, a share arrived, items were queued) or when the next rate-limit
slot or retry comes due. Each pass, per model: start the calls its
limiter allows, claim more items from the backlog when its queue runs
low, and have the tracker read more job windows when the backlog runs
low, in the order and amounts the
:class:`~pipeline.worker.scheduling.SchedulingPolicy` sets. It does no
I/O itself: claims, preparation and calls are the parts it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict, deque
from collections.abc import Mapping

from bson import ObjectId

from pipeline.jobs.item_ids import WINDOW_ITEMS
from pipeline.settings import Settings
from pipeline.worker.backlog import Backlog
from pipeline.worker.calls import Calls
from pipeline.worker.claims import Claims
from pipeline.worker.item_store import Item
from pipeline.worker.job_tracker import JobTracker
from pipeline.worker.limits import Reservation
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.preparation import Preparation
from pipeline.worker.requests import estimate_tokens
from pipeline.worker.scheduling import SchedulingPolicy
from pipeline.worker.served_model import ServedModel, ServedModels
from pipeline.worker.steps import until_done
from pipeline.worker.tasks import Tasks
from pipeline.worker.writer import ResultWriter


class Scheduler:
    """Starts calls for queued items as the limiters allow.

    Args:
        settings: ``MAX_ITEMS_PER_BATCH`` (claim and read sizes).
        served: The worker's models and limiters.
        backlog: The items ready to claim, per job.
        policy: Orders and sizes the work.
        claims: Leases items.
        preparation: Resolves prompts, serves cached answers.
        calls: Calls the provider for one item.
        tracker: Reads job windows.
        writer: Writes outcomes.
        tasks: Runs claims and calls.
        metrics: Queue gauges.
        chat_waiters: Chat calls waiting per model (they go first).
        wake: The event that wakes the loop.
    """

    def __init__(
        self,
        settings: Settings,
        served: ServedModels,
        backlog: Backlog,
        policy: SchedulingPolicy,
        claims: Claims,
        preparation: Preparation,
        calls: Calls,
        tracker: JobTracker,
        writer: ResultWriter,
        tasks: Tasks,
        metrics: WorkerMetrics,
        *,
        chat_waiters: Mapping[str, int],
        wake: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._served = served
        self._backlog = backlog
        self._policy = policy
        self._claims = claims
        self._preparation = preparation
        self._calls = calls
        self._tracker = tracker
        self._writer = writer
        self._tasks = tasks
        self._metrics = metrics
        self._chat_waiters = chat_waiters
        self._wake = wake
        #: Claimed items waiting for their call to start, per model.
        self.waiting: defaultdict[str, deque[Item]] = defaultdict(deque)
        #: Models with a claim under way (one at a time per model).
        self._claiming: set[str] = set()
        #: Set when the worker retires: nothing more starts.
        self.paused = False

    def wake(self) -> None:
        """Run a pass soon (something changed)."""
        self._wake.set()

    async def run(self) -> None:
        """The scheduler loop."""
        while True:
            self._wake.clear()
            self._backlog.release_due(time.monotonic())
            wait_s = self.schedule()
            next_retry = self._backlog.next_retry_due()
            if next_retry is not None:
                wait_s = min(wait_s, max(0.0, next_retry - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait_s, 0.001))

    def schedule(self) -> float:
        """One pass: start calls, claim, read ahead. Returns a wait hint."""
        wait_s = 1.0
        if self.paused:
            return wait_s
        for name in self._served.models:
            wait_s = min(wait_s, self.start_calls(name))
            self._metrics.gauges(
                name,
                len(self.waiting[name]) + self._backlog.ready_count(name),
                self._served.limiters[name].in_flight,
            )
        self._tracker.read_ahead(self._settings.max_items_per_batch)
        return wait_s

    def start_calls(self, name: str) -> float:
        """Start what the limiter allows; claim more when running low.

        Called by the loop and, so a freed slot is refilled at once, by
        every call that finishes and every claim that lands.

        Returns:
            Seconds until a rate limit lets the next call start (1 s when
            only a finishing call can free a slot).
        """
        model = self._served.models.get(name)
        if model is None or self.paused:
            return 1.0
        limiter = self._served.limiters[name]
        waiting = self.waiting[name]
        wait_s = 1.0
        while waiting and self._policy.batch_may_start(
            self._chat_waiters.get(name, 0)
        ):
            item = waiting[0]
            tokens = _estimate(item)
            delay = limiter.start_delay(tokens)
            if delay > 0:
                if not math.isinf(delay):
                    wait_s = delay
                break
            reservation = limiter.try_start(tokens)
            if reservation is None:
                break
            waiting.popleft()
            self._tasks.spawn(self._run(model, item, reservation))
        if name not in self._claiming and limiter.share.concurrency > 0:
            amount = self._policy.claim_size(
                len(waiting),
                limiter.capacity,
                self._settings.max_items_per_batch,
            )
            candidates = self._backlog.take(name, amount)
            if candidates:
                self._claiming.add(name)
                self._tasks.spawn(self._claim(name, candidates))
        return wait_s

    async def _claim(self, model: str, candidates: list[Item]) -> None:
        try:
            claimed = await self._claims.claim(model, candidates)
            # Another claim for the model may start while this one's
            # items are prepared.
            self._claiming.discard(model)
            await until_done(
                lambda: self._claims.mark_started(claimed), "mark started"
            )
            runnable, cached = await until_done(
                lambda: self._preparation.prepare(claimed), "prepare items"
            )
        finally:
            self._claiming.discard(model)
            self._wake.set()
        for outcome in cached:
            self._writer.add(outcome)
        self.waiting[model].extend(runnable)
        self.start_calls(model)

    async def _run(
        self, model: ServedModel, item: Item, reservation: Reservation
    ) -> None:
        limiter = self._served.limiters[model.name]
        used: int | None = None
        try:
            attempt = await self._calls.attempt(model, item)
            used = attempt.used_tokens
            if attempt.rate_limited:
                limiter.rate_limited()
        finally:
            limiter.finish(reservation, used)
            self.start_calls(model.name)
        self._writer.add(attempt.outcome)

    # -- what the others ask ---------------------------------------------

    def demand(self, model: str) -> int:
        """Items ``model`` could run here now (reported to the limits)."""
        backlog = self._backlog
        unread = sum(
            1
            for track in backlog.jobs.values()
            if not track.fully_read and not track.canceled
        )
        return (
            self._served.limiters[model].in_flight
            + len(self.waiting[model])
            + backlog.ready_count(model)
            + backlog.retry_count(model)
            + self._chat_waiters.get(model, 0)
            + unread * WINDOW_ITEMS
        )

    def has_work(self, job_id: ObjectId) -> bool:
        """Whether claimed items of a job wait for their call here."""
        return any(
            item["jobId"] == job_id
            for queue in self.waiting.values()
            for item in queue
        )

    def take_unstarted(self) -> list[Item]:
        """Remove and return every claimed item not sent yet."""
        unstarted = [item for queue in self.waiting.values() for item in queue]
        self.waiting.clear()
        return unstarted


def _estimate(item: Item) -> int:
    return estimate_tokens(
        item.get("systemPrompt"), item["userContent"], item.get("maxTokens")
    )
