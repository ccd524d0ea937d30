"""The worker's safety net: polls, recovery and the limits sync.

:class:`PollingMixin` is part of
:class:`~pipeline.worker.engine.ProviderWorker` (split out to keep each
module to one concern). Every ``POLL_INTERVAL`` it refreshes the catalog
and the active jobs, reads its hand-off inbox (items that other
providers' workers moved to its models: :mod:`pipeline.worker.handoffs`),
takes back expired leases (never those this worker still holds) and the
leases and journal entries of an earlier life of this worker or of a
retired one it took over (for those it reads every lease once; otherwise
only expired ones), and sweeps canceled jobs that still have pending
items; the lease keeper renews the leases of held items before they run
out; several times a second the worker exchanges reports and shares with
the limits coordinator.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from typing import Any

from bson import ObjectId

from pipeline.catalog import Pricing, key_variable_policy
from pipeline.jobs.aggregation import FINAL_COUNTED
from pipeline.jobs.item_ids import WINDOW_ITEMS
from pipeline.jobs.shapes import JobSummary
from pipeline.logging import get_logger
from pipeline.states import Status
from pipeline.store.document_collection import utcnow
from pipeline.worker.backlog import Item
from pipeline.worker.base import WorkerBase
from pipeline.worker.limits import ModelLimiter, Share
from pipeline.worker.served_model import ServedModel
from providers.errors import ProviderError

S = Status
log = get_logger(__name__)

SYNC_INTERVAL_S = 0.5
FAST_SYNC_INTERVAL_S = 0.1


class PollingMixin(WorkerBase):
    """The polling, recovery and limits-sync methods of a worker."""

    async def _poller(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self._refresh_models()
                await self._poll_once()
            except Exception as error:
                log.warning("poll_failed", worker=self.name, error=str(error))

    async def _poll_once(self) -> None:
        # Counted (in stats) before anything is read: whether a job was
        # found by a poll or by its notification can then be told apart.
        self._polls_begun += 1
        self._polls_running += 1
        try:
            await self._look_for_work()
        finally:
            self._polls_running -= 1

    async def _look_for_work(self) -> None:
        await self._recover_leases()
        jobs = await self._items.active_jobs()
        active = {job["_id"] for job in jobs}
        for job in jobs:
            await self._recover_journal(job)
            self._track(JobSummary.from_doc(job))
            await self._sweep_canceled_again(job)
        await self.handoffs.receive()  # a lost hand-off signal
        await self._items.tidy_journal()
        for job_id in list(self.backlog.jobs):
            if job_id not in active and not self._has_work(job_id):
                self.backlog.drop_job(job_id)
        self._wake.set()

    def _has_work(self, job_id: ObjectId) -> bool:
        return any(
            item["jobId"] == job_id
            for queue in self.waiting.values()
            for item in queue
        )

    async def _sweep_canceled_again(self, job: dict[str, Any]) -> None:
        """Sweep a canceled job again while it has pending items.

        Its first sweep may have failed (the database briefly gone), or
        a worker that did not know of the cancel yet may have put an
        item back to PENDING; the job would stay active for good.
        """
        track = self.backlog.jobs.get(job["_id"])
        if track is None or not track.canceled or track.canceling:
            return
        counts = job.get("counts") or {}
        unfinished = job["totalItems"] - sum(
            counts.get(s, 0) for s in FINAL_COUNTED
        )
        if unfinished <= 0:
            return
        if unfinished > await self._items.leased_count(job["_id"]):
            self._cancel_pending(track)

    async def _lease_keeper(self) -> None:
        """Renew the leases of held items before they run out.

        A claim takes up to two rounds of work, and a rate limit can
        hold an item back longer than its lease: without renewal another
        poll would take it back (failing it if it had no attempt left)
        while this worker still calls the provider for it.
        """
        while True:
            leases = [self._lease_seconds(m) for m in self.models] or [60.0]
            await asyncio.sleep(
                min(self.settings.poll_interval, min(leases) / 4)
            )
            try:
                await self._renew_leases()
            except Exception as error:
                log.warning("lease_renewal_failed", error=str(error))

    async def _renew_leases(self) -> None:
        """Renew, by model, the held leases past half their duration."""
        now = utcnow()
        due: dict[str, list[Item]] = defaultdict(list)
        for item in self.held.values():
            model = item["model"]
            if model not in self.models:
                continue
            half = timedelta(seconds=self._lease_seconds(model) / 2)
            if item["leaseExpiresAt"] - now < half:
                due[model].append(item)
        for model, items in due.items():
            await self._items.renew_leases(items, self._lease_seconds(model))

    def _holds(self, item: Item) -> bool:
        """Whether this worker holds the lease an item carries."""
        held = self.held.get(item["_id"])
        return held is not None and held["leaseOwner"] == item["leaseOwner"]

    async def _recover_leases(self) -> None:
        """Take back leases that ran out, or that a dead worker held.

        A dead worker's leases (an earlier life's, or a retired one's
        this worker took over) need every lease read, once after the
        start or the take-over; after that only expired leases can be
        stale, and reading them alone keeps each poll small.
        """
        if not self.models:
            return
        now = utcnow()
        every, self._full_lease_scan_due = self._full_lease_scan_due, False
        try:
            leased = await self._items.leased_items(
                self.models, None if every else now
            )
            stale = [
                item
                for item in leased
                if not self._holds(item)
                and (item["leaseExpiresAt"] < now or self._predecessor(item))
            ]
            if not stale:
                return
            requeued, failed = await self._items.release_leases(
                stale, reason="the worker processing it was lost"
            )
        except BaseException:
            self._full_lease_scan_due |= every  # the next poll reads all
            raise
        log.warning(
            "leases_recovered",
            requeued=len(requeued),
            failed=len(failed),
            worker=self.name,
        )
        canceled = [i for i in requeued if self._is_canceled(i["jobId"])]
        if canceled:
            await self._cancel_items(canceled)
        # Lease recovery read a few fields only: the backlog needs whole
        # items (rare, so one more read by _id is cheap).
        wanted = [
            i["_id"]
            for i in requeued
            if i["jobId"] in self.backlog.jobs
            and not self._is_canceled(i["jobId"])
        ]
        if wanted:
            for item in await self._items.items_by_id(wanted):
                if item["status"] == S.PENDING:
                    self.backlog.add_ready(item["jobId"], [item])
        for item in failed:
            self.metrics.item_finished(item["model"], S.FAILED)

    def _predecessor(self, item: Item) -> bool:
        """Whether a lease belongs to an earlier life of this worker."""
        return self._earlier_life(str(item.get("leaseOwner", "")))

    def _earlier_life(self, token: str) -> bool:
        """Whether a lane or lease token is of an earlier incarnation.

        Or of a retired worker of another code version that this one
        was told to take over (it is dead: see ``take_over``).
        """
        name, _, rest = token.partition("/")
        if name in self.taken_over:
            return True
        incarnation = rest.partition("/")[0]
        return name == self.name and incarnation != self.incarnation

    async def _recover_journal(self, job: dict[str, Any]) -> None:
        """Settle journal entries an earlier life of this worker left."""
        lanes = {
            entry["lane"]
            for entry in job.get("journal") or []
            if self._earlier_life(str(entry.get("lane", "")))
        }
        if lanes:
            await self._items.recover_journal(job, lanes)

    async def _refresh_models(self) -> None:
        from providers.keys import resolve_api_key

        key_policy = key_variable_policy(self.settings)
        documents = await self._catalog.list(active_only=True)
        served: dict[str, ServedModel] = {}
        for doc in documents:
            if doc["provider"] != self.provider_name:
                continue
            limits = doc.get("limits") or {}
            key: str | None = None
            key_error: Exception | None = None
            try:
                key = resolve_api_key(
                    doc["name"], doc.get("config") or {}, policy=key_policy
                )
            except ProviderError as error:
                key_error = error
            served[doc["name"]] = ServedModel(
                name=doc["name"],
                config=doc.get("config") or {},
                max_concurrency=limits.get("maxConcurrency")
                or self.settings.num_llm_workers,
                rpm=limits.get("rpm"),
                tpm=limits.get("tpm"),
                pricing=Pricing.model_validate(doc.get("pricing") or {}),
                api_key=key,
                key_error=key_error,
                shared_cache=bool(doc.get("sharedCache", False)),
            )
        for name in served:
            if name not in self.limiters:
                self.limiters[name] = ModelLimiter(Share(0))
        self.models = served

    # -- limits --------------------------------------------------------

    async def _syncer(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval())
            self.metrics.export()
            try:
                await self._sync_once()
            except Exception as error:
                # Keep the shares we have: they stay within the limits.
                log.warning("limits_sync_failed", error=str(error))

    async def _sync_once(self) -> None:
        reports = {
            name: {
                "limits": model.limits,
                "demand": self._demand(name),
                "inFlight": self.limiters[name].in_flight,
                "enforced": self.limiters[name].share.concurrency,
            }
            for name, model in self.models.items()
        }
        if not reports:
            return
        shares = await self._sync_limits(self.holder, reports)
        for name, share in shares.items():
            if name in self.limiters:
                self.limiters[name].set_share(
                    Share(share["concurrency"], share["rpm"], share["tpm"])
                )
        self._wake.set()

    def _sync_interval(self) -> float:
        """Sync often while a share is changing hands, else calmly.

        A worker waiting for capacity, or one that must give some back,
        syncs every tenth of a second so the handover is quick.
        """
        for name in self.models:
            limiter = self.limiters[name]
            starved = limiter.share.concurrency == 0 and self._demand(name)
            if starved or limiter.in_flight > limiter.share.concurrency:
                return FAST_SYNC_INTERVAL_S
        return SYNC_INTERVAL_S

    def _demand(self, model: str) -> int:
        return (
            self.limiters[model].in_flight
            + len(self.waiting[model])
            + self.backlog.ready_count(model)
            + self.backlog.retry_count(model)
            + self._chat_waiters[model]
            + sum(
                1
                for t in self.backlog.jobs.values()
                if not t.fully_read and not t.canceled
            )
            * WINDOW_ITEMS
        )
