"""The worker's safety net: polls that find stranded work and lost leases.

Jobs arrive by notification, so work starts at once; every
``POLL_INTERVAL`` a poll makes sure nothing is stranded. It takes back
expired leases (never those this worker still holds) and the leases and
journal entries of an earlier life of this worker or of a retired one it
took over (for those it reads every lease once; otherwise only expired
ones), refreshes the active jobs, reads its hand-off inbox (items other
providers' workers moved to its models: :mod:`pipeline.worker.handoffs`)
and sweeps canceled jobs that still have pending items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bson import ObjectId

from pipeline.jobs.shapes import JobSummary
from pipeline.logging import get_logger
from pipeline.states import Status
from pipeline.store.document_collection import utcnow
from pipeline.worker.backlog import Backlog
from pipeline.worker.claims import Claims
from pipeline.worker.handoffs import HandoffInbox
from pipeline.worker.item_store import Item, ItemStore
from pipeline.worker.job_tracker import JobTracker
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.names import WorkerIdentity
from pipeline.worker.served_model import ServedModels

S = Status
log = get_logger(__name__)


class Recovery:
    """Polls for work and takes back what dead or slow workers held.

    Args:
        identity: Which worker this is.
        items: The worker's item store.
        served: The worker's models.
        claims: What this worker holds (never taken back).
        tracker: The jobs this worker follows.
        backlog: Where recovered items are queued.
        metrics: Items failed by recovery.
        handoffs: This worker's hand-off inbox (read at every poll, in
            case a signal was lost).
        has_work: Whether a job still has items queued here.
        wake: Wakes the scheduler.
    """

    def __init__(
        self,
        identity: WorkerIdentity,
        items: ItemStore,
        served: ServedModels,
        claims: Claims,
        tracker: JobTracker,
        backlog: Backlog,
        metrics: WorkerMetrics,
        *,
        handoffs: HandoffInbox,
        has_work: Callable[[ObjectId], bool],
        wake: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._items = items
        self._served = served
        self._claims = claims
        self._tracker = tracker
        self._backlog = backlog
        self._metrics = metrics
        self._handoffs = handoffs
        self._has_work = has_work
        self._wake = wake
        #: Names of dead workers whose leases and journal entries this
        #: one takes back as its own earlier life's (see take_over).
        self.taken_over: set[str] = set()
        # The first lease recovery reads every lease (see recover_leases).
        self.full_lease_scan_due = True
        self.polls_begun = 0
        self.polls_running = 0

    def take_over(self, names: list[str]) -> None:
        """Take back, at the next poll, what these dead workers held."""
        self.taken_over.update(names)
        self.full_lease_scan_due = True

    async def run(self, interval: float) -> None:
        """Poll every ``interval`` seconds (a loop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self._served.refresh()
                await self.poll_once()
            except Exception as error:
                log.warning(
                    "poll_failed", worker=self._identity.name, error=str(error)
                )

    async def poll_once(self) -> None:
        """Recover leases and journal entries; refresh the active jobs."""
        # Counted (in stats) before anything is read: whether a job was
        # found by a poll or by its notification can then be told apart.
        self.polls_begun += 1
        self.polls_running += 1
        try:
            await self._look_for_work()
        finally:
            self.polls_running -= 1

    async def _look_for_work(self) -> None:
        await self.recover_leases()
        jobs = await self._items.active_jobs()
        active = {job["_id"] for job in jobs}
        for job in jobs:
            await self._recover_journal(job)
            self._tracker.track(JobSummary.from_doc(job))
            await self._tracker.sweep_canceled_again(job)
        await self._handoffs.receive()  # a lost hand-off signal
        await self._items.tidy_journal()
        for job_id in list(self._backlog.jobs):
            if job_id not in active and not self._has_work(job_id):
                self._backlog.drop_job(job_id)
        self._wake()

    async def recover_leases(self) -> None:
        """Take back leases that ran out, or that a dead worker held.

        A dead worker's leases (an earlier life's, or a retired one's
        this worker took over) need every lease read, once after the
        start or the take-over; after that only expired leases can be
        stale, and reading them alone keeps each poll small.
        """
        if not self._served.models:
            return
        now = utcnow()
        every, self.full_lease_scan_due = self.full_lease_scan_due, False
        try:
            leased = await self._items.leased_items(
                self._served.models, None if every else now
            )
            stale = [
                item
                for item in leased
                if not self._claims.holds(item)
                and (item["leaseExpiresAt"] < now or self._predecessor(item))
            ]
            if not stale:
                return
            requeued, failed = await self._items.release_leases(
                stale, reason="the worker processing it was lost"
            )
        except BaseException:
            self.full_lease_scan_due |= every  # the next poll reads all
            raise
        log.warning(
            "leases_recovered",
            requeued=len(requeued),
            failed=len(failed),
            worker=self._identity.name,
        )
        tracker = self._tracker
        canceled = [i for i in requeued if tracker.is_canceled(i["jobId"])]
        if canceled:
            await tracker.cancel_items(canceled)
        # Lease recovery read a few fields only: the backlog needs whole
        # items (rare, so one more read by _id is cheap).
        wanted = [
            i["_id"]
            for i in requeued
            if i["jobId"] in self._backlog.jobs
            and not tracker.is_canceled(i["jobId"])
        ]
        if wanted:
            for item in await self._items.items_by_id(wanted):
                if item["status"] == S.PENDING:
                    self._backlog.add_ready(item["jobId"], [item])
        for item in failed:
            self._metrics.item_finished(item["model"], S.FAILED)

    def earlier_life(self, token: str) -> bool:
        """Whether a lane or lease token is of a dead life of this worker."""
        return self._identity.earlier_life(token, self.taken_over)

    def _predecessor(self, item: Item) -> bool:
        return self.earlier_life(str(item.get("leaseOwner", "")))

    async def _recover_journal(self, job: dict[str, Any]) -> None:
        """Settle journal entries an earlier life of this worker left."""
        lanes = {
            entry["lane"]
            for entry in job.get("journal") or []
            if self.earlier_life(str(entry.get("lane", "")))
        }
        if lanes:
            await self._items.recover_journal(job, lanes)
