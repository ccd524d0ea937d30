"""Claims: items leased to this worker, from the claim to the written outcome.

A claim leases candidate items (PENDING → PROCESSING, one attempt
counted) under a per-claim owner token. Claimed items are *held* until
their outcome is written: the lease keeper renews their leases before
they run out (a rate limit may hold an item back longer than a lease
lasts), and this worker's own lease recovery never takes them back.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import timedelta

from bson import ObjectId

from pipeline.logging import get_logger
from pipeline.store.document_collection import utcnow
from pipeline.worker.backlog import Backlog
from pipeline.worker.item_store import Item, ItemStore
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.served_model import ServedModels
from pipeline.worker.steps import until_done

log = get_logger(__name__)


class Claims:
    """Claims items, holds them, renews their leases.

    Args:
        items: The worker's item store.
        served: The worker's models (lease durations).
        backlog: Where candidates of a claim that did not apply go back,
            and the jobs whose first claim marks them started.
        metrics: Claim timings.
        holder: The worker's name and incarnation (owner tokens start
            with it).
        renew_every: Longest wait between lease renewals (the poll
            interval).
    """

    def __init__(
        self,
        items: ItemStore,
        served: ServedModels,
        backlog: Backlog,
        metrics: WorkerMetrics,
        holder: str,
        renew_every: float,
    ) -> None:
        self._items = items
        self._served = served
        self._backlog = backlog
        self._metrics = metrics
        self._holder = holder
        self._renew_every = renew_every
        #: Claimed items whose outcome is not written yet.
        self.held: dict[ObjectId, Item] = {}
        #: Claims made (each has its own owner token).
        self.count = 0

    async def claim(self, model: str, candidates: list[Item]) -> list[Item]:
        """Lease what is still PENDING of ``candidates``; hold it.

        A claim whose answer is lost (the database gone mid-way) is
        checked once the database answers: the items carrying this
        claim's token are ours, the others go back to the backlog.
        """
        self.count += 1
        owner = f"{self._holder}/{self.count}"
        began = time.monotonic()
        try:
            claimed = await self._items.claim(
                candidates, owner, self._served.lease_seconds(model)
            )
            self._metrics.timed("claim", time.monotonic() - began)
        except Exception as error:
            log.warning("claim_failed", model=model, error=str(error))
            ids = [item["_id"] for item in candidates]
            claimed = await until_done(
                lambda: self._items.claimed_by(ids, owner), "claim check"
            )
            self._put_back(model, candidates, claimed)
        for item in claimed:
            self.held[item["_id"]] = item
        return claimed

    async def mark_started(self, items: list[Item]) -> None:
        """Record the first claim of each job (its status: PROCESSING)."""
        jobs = self._backlog.jobs
        fresh = {
            item["jobId"]
            for item in items
            if (track := jobs.get(item["jobId"])) is not None
            and not track.started
        }
        if fresh:
            await self._items.mark_started(fresh)
            for job_id in fresh:
                jobs[job_id].started = True

    def holds(self, item: Item) -> bool:
        """Whether this worker holds the lease ``item`` carries."""
        held = self.held.get(item["_id"])
        return held is not None and held["leaseOwner"] == item["leaseOwner"]

    def release(self, item_id: ObjectId) -> None:
        """Stop holding an item (its outcome is written, or it was lost)."""
        self.held.pop(item_id, None)

    def _put_back(
        self, model: str, candidates: list[Item], claimed: list[Item]
    ) -> None:
        """Queue again the candidates a claim did not get.

        Items the claim did not get are no longer PENDING (taken,
        canceled) when the claim applied; the backlog drops those.
        """
        taken = {item["_id"] for item in claimed}
        by_job: dict[ObjectId, list[Item]] = defaultdict(list)
        for item in candidates:
            if item["_id"] not in taken:
                by_job[item["jobId"]].append(item)
        for job_id, items in by_job.items():
            self._backlog.put_back(job_id, model, items)

    # -- leases ----------------------------------------------------------

    async def keep_leases(self) -> None:
        """Renew the leases of held items before they run out (a loop).

        A claim takes up to two rounds of work, and a rate limit can
        hold an item back longer than its lease: without renewal another
        poll would take it back (failing it if it had no attempt left)
        while this worker still calls the provider for it.
        """
        while True:
            leases = [
                self._served.lease_seconds(m) for m in self._served.models
            ] or [60.0]
            await asyncio.sleep(min(self._renew_every, min(leases) / 4))
            try:
                await self.renew()
            except Exception as error:
                log.warning("lease_renewal_failed", error=str(error))

    async def renew(self) -> None:
        """Renew, by model, the held leases past half their duration."""
        now = utcnow()
        due: dict[str, list[Item]] = defaultdict(list)
        for item in self.held.values():
            model = item["model"]
            if model not in self._served:
                continue
            half = timedelta(seconds=self._served.lease_seconds(model) / 2)
            if item["leaseExpiresAt"] - now < half:
                due[model].append(item)
        for model, items in due.items():
            await self._items.renew_leases(
                items, self._served.lease_seconds(model)
            )
