"""The jobs a worker follows: their windows, cancels and requeues.

A job is tracked from its notification (or the poll that finds it)
until it has no active item left here. Its items are read a window at a
time (the windows this replica owns) as the backlog runs low; a cancel
sweeps its pending items to CANCELED, a requeue its failed ones back to
PENDING (once per requeue generation).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bson import ObjectId

from pipeline.jobs.aggregation import FINAL_COUNTED
from pipeline.jobs.shapes import JobSummary, StoredItem
from pipeline.logging import bound_context, get_logger
from pipeline.states import Actor, Status
from pipeline.store.document_collection import utcnow
from pipeline.worker.backlog import (
    Backlog,
    JobTrack,
    owned_windows,
    window_range,
)
from pipeline.worker.item_store import Item, ItemStore
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.names import WorkerIdentity
from pipeline.worker.served_model import ServedModels
from pipeline.worker.tasks import Tasks

S = Status
log = get_logger(__name__)


class JobTracker:
    """Follows jobs and feeds their pending items to the backlog.

    Args:
        identity: Which worker this is (provider, replica, replicas).
        items: The worker's item store.
        served: The worker's models (items of others are skipped).
        backlog: Where pending items are queued; it keeps the tracks.
        tasks: Runs reads and sweeps.
        metrics: Read timings.
        wake: Wakes the scheduler (items queued).
    """

    def __init__(
        self,
        identity: WorkerIdentity,
        items: ItemStore,
        served: ServedModels,
        backlog: Backlog,
        tasks: Tasks,
        metrics: WorkerMetrics,
        wake: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._items = items
        self._served = served
        self._backlog = backlog
        self._tasks = tasks
        self._metrics = metrics
        self._wake = wake

    def track(self, job: JobSummary) -> None:
        """Follow a job (new, canceled or requeued)."""
        identity = self._identity
        if job.providers is not None and identity.provider not in (
            job.providers
        ):
            return
        track = self._backlog.jobs.get(job.id)
        if track is None:
            track = JobTrack(
                job_id=job.id,
                client_id=job.client_id,
                priority=job.priority,
                total_items=job.total_items,
                item_base=job.item_base,
                max_attempts=job.max_attempts,
                cache=job.cache,
                windows=self._windows(job.id, job.total_items),
                started=job.started_at is not None,
                fallback_routes=job.fallback_routes,
            )
            self._backlog.add_job(track)
        canceled = job.status == S.CANCELED or job.deleted
        if canceled and not track.canceled:
            track.canceled = True
            self.cancel_pending(track)
        if job.requeues > track.requeues and not track.requeuing:
            track.requeuing = True
            self._tasks.spawn(self.requeue(track, job.requeues))

    def is_canceled(self, job_id: ObjectId) -> bool:
        """Whether a tracked job was canceled (or deleted)."""
        track = self._backlog.jobs.get(job_id)
        return track is not None and track.canceled

    def read_ahead(self, low_water: int) -> None:
        """Start reading the next window of the jobs running low."""
        for track in self._backlog.jobs_to_read(low_water):
            track.loading = True
            self._tasks.spawn(self.read_window(track))

    async def read_window(self, track: JobTrack) -> None:
        """Read a job's next window; queue its pending items."""
        window = track.windows[0]
        start, end = window_range(window, track.total_items)
        began = time.monotonic()
        try:
            items = await self._items.read_window(track.item_base, start, end)
            self._metrics.timed("read_window", time.monotonic() - began)
        except Exception as error:
            log.warning(
                "window_read_failed",
                job_id=str(track.job_id),
                error=str(error),
            )
            await asyncio.sleep(1)
            return
        finally:
            track.loading = False
        if track.windows and track.windows[0] == window:
            track.windows.popleft()
        self.queue_pending(track.job_id, items)

    def queue_pending(self, job_id: ObjectId, items: list[Item]) -> int:
        """Queue the PENDING items of served models: ready, or when due.

        Returns:
            How many were queued.
        """
        served = self._served
        pending = [
            item
            for item in items
            if item["status"] == S.PENDING and item["model"] in served
        ]
        self._backlog.add_found(job_id, pending, utcnow())
        self._wake()
        return len(pending)

    # -- cancel and requeue ----------------------------------------------

    def cancel_pending(self, track: JobTrack) -> None:
        """Sweep a canceled job's pending items to CANCELED (once at a time).

        Also run by the poll while a canceled job still has pending
        items: a sweep can fail, and an item can become PENDING after it
        (see :meth:`cancel_items`).
        """
        if track.canceling:
            return
        track.canceling = True

        async def sweep() -> None:
            try:
                await self.sweep(track, S.PENDING, S.CANCELED)
            finally:
                track.canceling = False

        self._tasks.spawn(sweep())

    async def sweep_canceled_again(self, job: dict[str, Any]) -> None:
        """Sweep a canceled job again while it has pending items.

        Its first sweep may have failed (the database briefly gone), or
        a worker that did not know of the cancel yet may have put an
        item back to PENDING; the job would stay active for good.
        """
        track = self._backlog.jobs.get(job["_id"])
        if track is None or not track.canceled or track.canceling:
            return
        counts = job.get("counts") or {}
        unfinished = job["totalItems"] - sum(
            counts.get(s, 0) for s in FINAL_COUNTED
        )
        if unfinished <= 0:
            return
        if unfinished > await self._items.leased_count(job["_id"]):
            self.cancel_pending(track)

    async def requeue(self, track: JobTrack, generation: int) -> None:
        """Sweep a requeued job's failed items back to PENDING.

        The generation counts as swept only once the sweep succeeded: if
        it fails, the poll finds the job still requeued and runs it again
        (it moves each item once per generation, so nothing twice).
        """
        try:
            await self.sweep(track, S.FAILED, S.PENDING, generation)
            track.requeues = generation
        except Exception as error:
            log.warning(
                "requeue_sweep_failed",
                job_id=str(track.job_id),
                error=str(error),
            )
        finally:
            track.requeuing = False

    async def cancel_items(self, items: list[Item]) -> None:
        """Cancel items of canceled jobs that went back to PENDING.

        A call that ends in a retry, or a lease taken back, may put an
        item back to PENDING after its job's cancel sweep; nobody would
        run it, and the job would stay active. If this fails, the poll
        sweeps the job again.
        """
        try:
            await self._items.move(items, S.PENDING, S.CANCELED)
        except Exception as error:
            log.warning("cancel_items_failed", error=str(error))

    async def sweep(
        self,
        track: JobTrack,
        source: Status,
        target: Status,
        generation: int = 0,
    ) -> None:
        """Move this worker's items of a job (cancel, requeue)."""
        extra: StoredItem = {}
        if target == S.PENDING:
            extra = {
                "attempts": 0,
                "nextAttemptAt": None,
                "finishedAt": None,
                "requeues": generation,
            }
        moved_total = 0
        with bound_context(job_id=str(track.job_id)):
            for window in self._windows(track.job_id, track.total_items):
                start, end = window_range(window, track.total_items)
                items = await self._items.read_window(
                    track.item_base, start, end
                )
                candidates = [
                    i
                    for i in items
                    if i["status"] == source
                    and i["model"] in self._served
                    # A requeue moves each item once per generation, so
                    # sweeping again (after a restart) changes nothing.
                    and (
                        target != S.PENDING
                        or i.get("requeues", 0) < generation
                    )
                ]
                moved = await self._items.move(
                    candidates,
                    source,
                    target,
                    extra,
                    # A requeue is the admin's order, carried out here.
                    Actor.ADMIN if target == S.PENDING else Actor.SYSTEM,
                )
                moved_total += len(moved)
                if target == S.PENDING:
                    for item in moved:
                        item.update(extra)
                        item["status"] = S.PENDING
                    self._backlog.add_ready(track.job_id, moved)
                    self._wake()
            log.info(
                "job_swept",
                source=source,
                target=target,
                items=moved_total,
                worker=self._identity.name,
            )

    def _windows(self, job_id: ObjectId, total_items: int) -> Any:
        identity = self._identity
        return owned_windows(
            job_id, total_items, identity.replica, identity.replicas
        )
