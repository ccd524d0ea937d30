"""The worker's view of pending work: the jobs it tracks and their items.

A job's items are read from the database a window at a time
(:class:`JobTrack`, by computed ids: :mod:`pipeline.jobs.item_ids`), so
memory stays bounded whatever the job's size. Ready items queue per job
and model; they are taken in the order the worker's
:class:`~pipeline.worker.scheduling.SchedulingPolicy` gives (by default
clients take turns, then priority, then age). Items waiting for a retry
sit in a heap until they are due, then go to the front of their job's
queue. Each item is queued once, however often it is found.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bson import ObjectId

from pipeline.jobs.fallback_routes import Route
from pipeline.jobs.item_ids import WINDOW_ITEMS
from pipeline.jobs.shapes import StoredItem
from pipeline.worker.scheduling import DefaultScheduling, SchedulingPolicy

Item = StoredItem


@dataclass
class JobTrack:
    """One job as a worker sees it.

    Attributes:
        job_id: The job.
        client_id: Its owner (the unit of fairness).
        priority: Higher goes first within the client.
        total_items: Items in the job (seq runs 0..total-1).
        item_base: The base of its item ids (see ``jobs.item_ids``).
        max_attempts: Attempts per item.
        cache: Whether results may come from the result cache.
        windows: Window indexes this worker still has to read.
        ready: Per model, items read and not yet claimed.
        canceled: The client canceled (or deleted) the job.
        canceling: A sweep canceling its pending items is running.
        loading: A window read is running.
        requeues: The job's requeue generation already swept.
        requeuing: A requeue sweep is running.
        started: Whether the job is known to have started.
        fallback_routes: Per model, where its items go while it is down
            (:mod:`pipeline.worker.fallback`).
    """

    job_id: ObjectId
    client_id: ObjectId
    priority: int
    total_items: int
    item_base: ObjectId
    max_attempts: int
    cache: bool
    windows: deque[int]
    ready: dict[str, deque[Item]] = field(default_factory=dict)
    loading: bool = False
    canceled: bool = False
    canceling: bool = False
    requeues: int = 0
    requeuing: bool = False
    started: bool = False
    fallback_routes: dict[str, tuple[Route, ...]] = field(default_factory=dict)

    @property
    def fully_read(self) -> bool:
        """Whether every window of this worker was read."""
        return not self.windows

    def ready_count(self, model: str) -> int:
        """Items of ``model`` read and waiting to be claimed."""
        queue = self.ready.get(model)
        return len(queue) if queue else 0

    @property
    def total_ready(self) -> int:
        """Items of every model read and waiting to be claimed."""
        return sum(len(q) for q in self.ready.values())


def owned_windows(
    job_id: ObjectId, total_items: int, replica: int, replicas: int
) -> deque[int]:
    """The windows of a job that one replica of a provider's worker reads.

    Windows are dealt round-robin from an offset derived from the job
    id, so the replicas split every job and no two read the same items.
    """
    count = (total_items + WINDOW_ITEMS - 1) // WINDOW_ITEMS
    offset = int(str(job_id)[-6:], 16) % replicas
    return deque(w for w in range(count) if (w + offset) % replicas == replica)


def window_range(window: int, total_items: int) -> tuple[int, int]:
    """The seq range ``[start, end)`` of a window of a job."""
    start = window * WINDOW_ITEMS
    return start, min(start + WINDOW_ITEMS, total_items)


class Backlog:
    """Pending items of one worker, taken in its policy's order."""

    def __init__(self, policy: SchedulingPolicy | None = None) -> None:
        """Start empty.

        Args:
            policy: Orders the taking and the reading ahead
                (:class:`~pipeline.worker.scheduling.DefaultScheduling`
                by default).
        """
        self.policy = policy or DefaultScheduling()
        self.jobs: dict[ObjectId, JobTrack] = {}
        self._retries: list[tuple[float, int, Item]] = []
        self._tie = itertools.count()
        # Ids of the items queued (ready or waiting for a retry). The
        # same item can be found twice (a requeue sweep and a window
        # read both see it PENDING): queued twice, it would be claimed,
        # sent and counted twice.
        self._queued: set[ObjectId] = set()
        #: Takes items that are not for live calls (the batch lane's
        #: :meth:`~pipeline.worker.batch_lane.BatchLane.take`): every
        #: item queued, found by a window read, a lease taken back or a
        #: requeue, passes it first.
        self.divert: Callable[[Item], bool] | None = None

    def add_job(self, track: JobTrack) -> None:
        """Track a job (replacing an older track of it)."""
        self.jobs[track.job_id] = track

    def drop_job(self, job_id: ObjectId) -> JobTrack | None:
        """Stop tracking a job (finished, canceled or deleted)."""
        track = self.jobs.pop(job_id, None)
        if track is not None:
            for queue in track.ready.values():
                self._queued.difference_update(i["_id"] for i in queue)
            kept = []
            for retry in self._retries:
                if retry[2]["jobId"] == job_id:
                    self._queued.discard(retry[2]["_id"])
                else:
                    kept.append(retry)
            self._retries = kept
            heapq.heapify(self._retries)
        return track

    def add_ready(self, job_id: ObjectId, items: list[Item]) -> None:
        """Queue items read from the database for claiming.

        An item already queued is not queued again.
        """
        track = self.jobs.get(job_id)
        if track is None:
            return
        for item in items:
            if self.divert is not None and self.divert(item):
                continue
            if item["_id"] not in self._queued:
                self._queued.add(item["_id"])
                track.ready.setdefault(item["model"], deque()).append(item)

    def put_back(
        self, job_id: ObjectId, model: str, items: list[Item]
    ) -> None:
        """Queue items again at the front (a claim that did not apply)."""
        track = self.jobs.get(job_id)
        if track is None:
            return
        queue = track.ready.setdefault(model, deque())
        for item in reversed(items):
            if item["_id"] not in self._queued:
                self._queued.add(item["_id"])
                queue.appendleft(item)

    def add_found(
        self, job_id: ObjectId, items: list[Item], now: datetime
    ) -> None:
        """Queue PENDING items read from the database.

        Each is ready now, or held until its ``nextAttemptAt`` (a retry
        not yet due when it was read).

        Args:
            job_id: Their job.
            items: The items.
            now: The database clock's now (``nextAttemptAt`` is on it).
        """
        ready = []
        for item in items:
            due = item.get("nextAttemptAt")
            if due is not None and due > now:
                delay = (due - now).total_seconds()
                self.schedule_retry(item, time.monotonic() + delay)
            else:
                ready.append(item)
        self.add_ready(job_id, ready)

    def schedule_retry(self, item: Item, due: float) -> None:
        """Hold an item until ``due`` (monotonic seconds).

        An item already queued is not queued again.
        """
        if item["_id"] in self._queued:
            return
        if self.divert is not None and self.divert(item):
            return
        self._queued.add(item["_id"])
        heapq.heappush(self._retries, (due, next(self._tie), item))

    def release_due(self, now: float) -> int:
        """Move retries that are due to the front of their job's queue."""
        moved = 0
        while self._retries and self._retries[0][0] <= now:
            _, _, item = heapq.heappop(self._retries)
            track = self.jobs.get(item["jobId"])
            if track is None or track.canceled:
                self._queued.discard(item["_id"])
                continue
            track.ready.setdefault(item["model"], deque()).appendleft(item)
            moved += 1
        return moved

    def next_retry_due(self) -> float | None:
        """When the earliest held retry is due."""
        return self._retries[0][0] if self._retries else None

    def retry_count(self, model: str) -> int:
        """Retries of ``model`` waiting for their time."""
        return sum(1 for _, _, item in self._retries if item["model"] == model)

    def ready_count(self, model: str) -> int:
        """Items of ``model`` ready to claim, over all jobs."""
        return sum(t.ready_count(model) for t in self.jobs.values())

    def take(self, model: str, limit: int) -> list[Item]:
        """Up to ``limit`` ready items of ``model``, in the policy's order.

        One item from each job the policy names in turn, until ``limit``
        are taken or the policy names none.
        """
        taken: list[Item] = []
        if limit <= 0:
            return taken
        for track in self.policy.take_order(list(self.jobs.values()), model):
            item = track.ready[model].popleft()
            self._queued.discard(item["_id"])
            taken.append(item)
            if len(taken) >= limit:
                break
        return taken

    def jobs_to_read(self, low_water: int) -> list[JobTrack]:
        """Jobs that should read their next window now (the policy's call).

        Args:
            low_water: Ready items below which a job may read more.
        """
        return self.policy.jobs_to_read(list(self.jobs.values()), low_water)
