"""The provider worker: from pending items to written results.

One :class:`ProviderWorker` serves every model of one provider. Its
loops, all on one asyncio event loop:

* the scheduler starts calls for claimed items as each model's limiter
  allows, claims more items from the backlog when its queue runs low,
  and reads more job windows when the backlog runs low, in the order and
  amounts its :class:`~pipeline.worker.scheduling.SchedulingPolicy` sets;
* the poller, the lease keeper and the limits syncer
  (:mod:`pipeline.worker.polling`): the safety net that finds stranded
  work and takes back lost leases, the renewal of the leases of items
  claimed and not yet written (:attr:`ProviderWorker.held`), and the
  exchange of shares with the limits coordinator;
* the result writer writes outcomes in batches;
* for providers with a batch API, the batch lane
  (:mod:`pipeline.worker.batch_lane`): items of ``mode: "batch"`` jobs
  are left to it, and its rounds submit them to provider batches, poll
  and collect.

This module holds the scheduling and the calls; chat completions are in
:mod:`pipeline.worker.chat`. Jobs arrive by notification, so work starts
at once; the poll makes sure nothing is stranded. On a deploy of new
code a worker drains (stops claiming, finishes its calls, gives back
what it never sent) and its successor takes over (see ``begin_drain``
and ``take_over``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import random
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from bson import ObjectId

from pipeline.backoff import backoff_s
from pipeline.catalog import ModelCatalog
from pipeline.code_version import code_version
from pipeline.jobs.shapes import JobSummary
from pipeline.logging import bound_context, get_logger
from pipeline.settings import Settings
from pipeline.states import Actor, Status
from pipeline.store import Store
from pipeline.store.deployed_version import DeployedVersion
from pipeline.store.document_collection import utcnow
from pipeline.worker.backlog import (
    Backlog,
    Item,
    JobTrack,
    owned_windows,
    window_range,
)
from pipeline.worker.base import SyncLimits
from pipeline.worker.batch_lane import BatchLane, batch_lane
from pipeline.worker.chat import ChatMixin
from pipeline.worker.fallback import FallbackRouter
from pipeline.worker.handoffs import HandoffInbox, SignalHandoff, inbox_id
from pipeline.worker.item_store import ItemStore, Outcome, WriteReport
from pipeline.worker.limits import ModelLimiter, Reservation
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.names import worker_name, worker_role
from pipeline.worker.polling import PollingMixin
from pipeline.worker.process import RoundTripCounter, cancel_all, tune_gc
from pipeline.worker.prompt_cache import PromptCache
from pipeline.worker.requests import (
    SHARED_CACHE_SCOPE,
    cache_key,
    estimate_tokens,
    item_request,
)
from pipeline.worker.retry import RetryPolicy, error_record
from pipeline.worker.scheduling import DefaultScheduling, SchedulingPolicy
from pipeline.worker.served_model import ServedModel
from pipeline.worker.writer import ResultWriter
from providers.base import Completion, CompletionRequest, LLMProvider
from providers.errors import RateLimitError

S = Status
log = get_logger(__name__)

T = TypeVar("T")

#: Seconds before a failed database step is tried again (then doubling).
STEP_BACKOFF_S = 0.2
#: The longest wait between tries of a database step.
STEP_MAX_BACKOFF_S = 5.0


class ProviderWorker(ChatMixin, PollingMixin):
    """Processes one provider's items; see the module docstring."""

    def __init__(
        self,
        provider: str,
        replica: int,
        settings: Settings,
        sync_limits: SyncLimits,
        *,
        store: Store | None = None,
        metrics_exporters: Mapping[str, Any] | None = None,
        retry_policy: RetryPolicy | None = None,
        scheduling: SchedulingPolicy | None = None,
        seed: int | None = None,
        signal_handoff: SignalHandoff | None = None,
    ) -> None:
        self.provider_name = provider
        self.replica = replica
        self.replicas = settings.worker_replicas
        self.settings = settings
        self.name = worker_name(provider, replica, code_version(settings))
        self.incarnation = uuid.uuid4().hex[:12]
        self.holder = f"{self.name}/{self.incarnation}"
        self._sync_limits = sync_limits
        self._store = store
        self._retry = retry_policy or RetryPolicy()
        self._rng = random.Random(seed)
        self.metrics = WorkerMetrics(provider, metrics_exporters)
        self.models: dict[str, ServedModel] = {}
        self.limiters: dict[str, ModelLimiter] = {}
        self.scheduling = scheduling or DefaultScheduling()
        self.backlog = Backlog(self.scheduling)
        self.fallbacks = FallbackRouter(
            provider, self.replicas, self.backlog, signal_handoff
        )
        self.waiting: dict[str, deque[Item]] = defaultdict(deque)
        self._claiming: set[str] = set()
        self.held: dict[ObjectId, Item] = {}
        self._chat_waiters: dict[str, int] = defaultdict(int)
        self.prompt_cache = PromptCache()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._wake = asyncio.Event()
        self._claims = 0
        self._polls_begun = 0
        self._polls_running = 0
        self._started = False
        self._start_lock = asyncio.Lock()
        # Set by begin_drain (a deploy of other code retires this one).
        self._draining = False
        self._handed_over: list[ObjectId] = []
        #: Names of dead workers whose leases and journal entries this
        #: one takes back as its own earlier life's (see take_over).
        self.taken_over: set[str] = set()
        # The first lease recovery reads every lease (see polling).
        self._full_lease_scan_due = True
        self._round_trips = RoundTripCounter()
        self._loop_lag_ms = 0.0
        self.batch_lane: BatchLane | None = None
        self._items: ItemStore
        self.handoffs: HandoffInbox
        self._writer: ResultWriter
        self._provider: LLMProvider
        self._catalog: ModelCatalog

    # -- life cycle ----------------------------------------------------

    async def start(self) -> None:
        """Connect, recover and start the loops (idempotent)."""
        async with self._start_lock:
            if self._started or self._draining:
                return
            from pipeline.store import create_mongo_client
            from providers.registry import get_provider

            if self._store is None:
                if not self.settings.db_connection_string:
                    raise RuntimeError("DB_CONNECTION_STRING is not set")
                self._store = Store(
                    create_mongo_client(
                        self.settings.db_connection_string,
                        app_name=self.name,
                        event_listeners=[self._round_trips],
                    ),
                    self.settings.db_name,
                )
            store = self._store
            current = await DeployedVersion(store).current()
            if current not in (None, code_version(self.settings)):
                # A newer deploy took over (this actor was created or
                # restarted by a replica on its way out): its workers
                # own the work, and this one is about to be retired.
                self._draining = True
                log.warning("worker_superseded", worker=self.name, by=current)
                return
            self._items = ItemStore(store, self.holder)
            self._catalog = ModelCatalog(store)
            self._provider = get_provider(self.provider_name)
            self._writer = ResultWriter(self._items, self._written)
            self.handoffs = HandoffInbox(
                self._items.handoffs,
                inbox_id(self.provider_name, self.replica),
                self._items,
                self.backlog,
                lambda: self.models,
                self._wake,
            )
            # Items of batch jobs go to provider batches, not live calls.
            # Their records belong to the role (provider and replica,
            # no version): a restart or a deploy's successor takes them.
            self.batch_lane = batch_lane(
                self.provider_name,
                worker_role(self.provider_name, self.replica),
                self.holder,
                store,
                self.settings,
                lambda: self.models,
                self._is_canceled,
                policy=self._retry,
                rng=self._rng,
            )
            if self.batch_lane is not None:
                self.backlog.divert = self.batch_lane.take
            await self._refresh_models()
            await self._sync_once()
            if self._draining:  # retired while starting: claim nothing
                return
            await self._poll_once()
            self._loops = [
                asyncio.create_task(self._scheduler(), name="scheduler"),
                asyncio.create_task(self._poller(), name="poller"),
                asyncio.create_task(self._lease_keeper(), name="leases"),
                asyncio.create_task(self._syncer(), name="syncer"),
                asyncio.create_task(self._writer.run(), name="writer"),
                asyncio.create_task(self._watch_loop_lag(), name="lag"),
            ]
            if self.batch_lane is not None:
                self._loops.append(
                    asyncio.create_task(self.batch_lane.run(), name="batches")
                )
            self._started = True
            tune_gc()
            log.info(
                "worker_started",
                worker=self.name,
                incarnation=self.incarnation,
                models=sorted(self.models),
            )

    async def stop(self) -> None:
        """Finish running calls, write their outcomes, stop the loops."""
        if not self._started:
            return
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        await cancel_all(self._loops)
        await self._writer.flush()
        await self._provider.aclose()
        if self.batch_lane is not None:
            await self.batch_lane.aclose()
        self._started = False

    # -- retirement (a deploy of other code) ----------------------------

    async def begin_drain(self, sync_limits: SyncLimits | None = None) -> None:
        """Stop claiming and reading; keep finishing what is running.

        Args:
            sync_limits: The successor's limits coordinator: reporting
                the calls still running there keeps its grants to the
                new workers within the limits while they finish.
        """
        self._draining = True
        for task in self._loops:
            if task.get_name() in ("poller", "batches"):
                # Lease recovery, job tracking and the provider batches
                # (owned by the role, not the version) are the
                # successor's.
                await cancel_all([task])
        if sync_limits is not None:
            self._sync_limits = sync_limits
            if self._started:
                try:
                    await self._sync_once()
                except Exception as error:
                    log.warning("drain_sync_failed", error=str(error))

    async def drained(self) -> list[ObjectId]:
        """Finish running calls, give back unstarted items, stop.

        Items claimed but never sent go back to PENDING with their
        attempt given back (nothing was tried); running calls end and
        their outcomes are written. Call :meth:`begin_drain` first.

        Returns:
            The items this worker made PENDING since the drain began
            (given back, or retries): nobody queued them, so the
            successor must (``adopt``).
        """
        if not self._started:
            return []
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        unstarted = [item for queue in self.waiting.values() for item in queue]
        self.waiting.clear()
        if unstarted:
            given_back, _ = await self._persist(
                lambda: self._items.release_leases(
                    unstarted,
                    reason="given back by a retired worker",
                    attempted=False,
                ),
                "give back unstarted items",
            )
            for item in unstarted:
                self.held.pop(item["_id"], None)
            self._handed_over += [item["_id"] for item in given_back]
        await cancel_all(self._loops)
        await self._persist(self._writer.flush, "write outcomes")
        await self._provider.aclose()
        if self.batch_lane is not None:
            await self.batch_lane.aclose()
        self._started = False
        log.info(
            "worker_drained",
            worker=self.name,
            handed_over=len(self._handed_over),
        )
        return list(self._handed_over)

    def take_over(self, names: list[str]) -> None:
        """Take back, at the next poll, what these dead workers held.

        Their leases (without waiting for them to expire) and their
        unsettled journal entries, as an earlier life's. Only for
        workers known to be dead: a retired worker that was killed
        without draining, of another code version (another name).
        """
        self.taken_over.update(names)
        self._full_lease_scan_due = True

    async def adopt(self, ids: list[ObjectId]) -> int:
        """Queue items a retired worker made PENDING (see :meth:`drained`).

        Returns:
            How many were queued here (the others were taken, or belong
            to jobs this worker reads from the start anyway).
        """
        await self.start()
        if not ids or not self._started:
            return 0
        queued = 0
        now = utcnow()
        for item in await self._items.items_by_id(ids):
            if item["status"] != S.PENDING or item["model"] not in self.models:
                continue
            if item["jobId"] not in self.backlog.jobs:
                continue
            due = item.get("nextAttemptAt")
            if due is not None and due > now:
                delay = (due - now).total_seconds()
                self.backlog.schedule_retry(item, time.monotonic() + delay)
            else:
                self.backlog.add_ready(item["jobId"], [item])
            queued += 1
        self._wake.set()
        return queued

    # -- notifications -------------------------------------------------

    async def receive_handoffs(self) -> int:
        """Queue items another provider's worker handed over now.

        Returns:
            How many were queued (see :mod:`pipeline.worker.handoffs`).
        """
        await self.start()
        if not self._started or self._draining:
            return 0
        return await self.handoffs.receive(signalled=True)

    async def notify_job(self, job: dict[str, Any]) -> None:
        """A job was submitted or changed: look at it now.

        Args:
            job: Its summary (:meth:`JobSummary.to_doc`).
        """
        await self.start()
        if self._draining:
            return
        summary = JobSummary.from_doc(job)
        if set(summary.models) - set(self.models):
            # A model added since the last poll: learn it before reading
            # the job's items, or they would be skipped as not ours.
            await self._refresh_models()
            await self._sync_once()
        self._track(summary)
        self._wake.set()

    async def ping(self) -> dict[str, Any]:
        """Start if needed and report health."""
        await self.start()
        return {"worker": self.name, "incarnation": self.incarnation}

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring, tests and benchmarks."""
        return {
            "worker": self.name,
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "roundTrips": self._round_trips.count,
            "claims": self._claims,
            "polls": {
                "begun": self._polls_begun,
                "running": self._polls_running,
            },
            "jobs": len(self.backlog.jobs),
            "inFlight": {m: lim.in_flight for m, lim in self.limiters.items()},
            "shares": {
                m: lim.share.concurrency for m, lim in self.limiters.items()
            },
            "waiting": {m: len(q) for m, q in self.waiting.items()},
            "unwritten": self._writer.pending if self._started else 0,
            "loopLagMs": round(self._loop_lag_ms, 1),
            "batches": self.batch_lane.stats() if self.batch_lane else None,
            "fallbacks": {
                "moved": self.fallbacks.moved,
                "received": self.handoffs.received if self._started else 0,
                "signals": self.handoffs.signals if self._started else 0,
            },
            "metrics": self.metrics.snapshot(),
        }

    # -- jobs and windows ----------------------------------------------

    def _track(self, job: JobSummary) -> None:
        if job.providers is not None and self.provider_name not in (
            job.providers
        ):
            return
        track = self.backlog.jobs.get(job.id)
        if track is None:
            track = JobTrack(
                job_id=job.id,
                client_id=job.client_id,
                priority=job.priority,
                total_items=job.total_items,
                item_base=job.item_base,
                max_attempts=job.max_attempts,
                cache=job.cache,
                windows=owned_windows(
                    job.id, job.total_items, self.replica, self.replicas
                ),
                started=job.started_at is not None,
                fallback_routes=job.fallback_routes,
            )
            self.backlog.add_job(track)
        canceled = job.status == S.CANCELED or job.deleted
        if canceled and not track.canceled:
            track.canceled = True
            self._cancel_pending(track)
        if job.requeues > track.requeues and not track.requeuing:
            track.requeuing = True
            self._spawn(self._requeue(track, job.requeues))

    async def _read_window(self, track: JobTrack) -> None:
        window = track.windows[0]
        start, end = window_range(window, track.total_items)
        began = time.monotonic()
        try:
            items = await self._items.read_window(track.item_base, start, end)
            self.metrics.timed("read_window", time.monotonic() - began)
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
        now = utcnow()
        ready = []
        for item in items:
            if item["model"] not in self.models or item["status"] != S.PENDING:
                continue
            due = item.get("nextAttemptAt")
            if due is not None and due > now:
                delay = (due - now).total_seconds()
                self.backlog.schedule_retry(item, time.monotonic() + delay)
            else:
                ready.append(item)
        self.backlog.add_ready(track.job_id, ready)
        self._wake.set()

    def _cancel_pending(self, track: JobTrack) -> None:
        """Sweep a canceled job's pending items to CANCELED (once at a time).

        Also run by the poll while a canceled job still has pending
        items: a sweep can fail, and an item can become PENDING after it
        (see :meth:`_cancel_items`).
        """
        if track.canceling:
            return
        track.canceling = True

        async def sweep() -> None:
            try:
                await self._sweep(track, S.PENDING, S.CANCELED)
            finally:
                track.canceling = False

        self._spawn(sweep())

    async def _requeue(self, track: JobTrack, generation: int) -> None:
        """Sweep a requeued job's failed items back to PENDING.

        The generation counts as swept only once the sweep succeeded: if
        it fails, the poll finds the job still requeued and runs it again
        (it moves each item once per generation, so nothing twice).
        """
        try:
            await self._sweep(track, S.FAILED, S.PENDING, generation)
            track.requeues = generation
        except Exception as error:
            log.warning(
                "requeue_sweep_failed",
                job_id=str(track.job_id),
                error=str(error),
            )
        finally:
            track.requeuing = False

    async def _cancel_items(self, items: list[Item]) -> None:
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

    def _is_canceled(self, job_id: ObjectId) -> bool:
        track = self.backlog.jobs.get(job_id)
        return track is not None and track.canceled

    async def _sweep(
        self,
        track: JobTrack,
        source: Status,
        target: Status,
        generation: int = 0,
    ) -> None:
        """Move this worker's items of a job (cancel, requeue)."""
        extra: dict[str, Any] = {}
        if target == S.PENDING:
            extra = {
                "attempts": 0,
                "nextAttemptAt": None,
                "finishedAt": None,
                "requeues": generation,
            }
        windows = owned_windows(
            track.job_id, track.total_items, self.replica, self.replicas
        )
        moved_total = 0
        with bound_context(job_id=str(track.job_id)):
            for window in windows:
                start, end = window_range(window, track.total_items)
                items = await self._items.read_window(
                    track.item_base, start, end
                )
                candidates = [
                    i
                    for i in items
                    if i["status"] == source
                    and i["model"] in self.models
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
                        item.update(extra, status=S.PENDING)
                    self.backlog.add_ready(track.job_id, moved)
                    self._wake.set()
            log.info(
                "job_swept",
                source=source,
                target=target,
                items=moved_total,
                worker=self.name,
            )

    # -- the scheduler -------------------------------------------------

    async def _scheduler(self) -> None:
        while True:
            self._wake.clear()
            self.backlog.release_due(time.monotonic())
            wait_s = self._schedule()
            next_retry = self.backlog.next_retry_due()
            if next_retry is not None:
                wait_s = min(wait_s, max(0.0, next_retry - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait_s, 0.001))

    def _schedule(self) -> float:
        """One pass: start calls, claim, read ahead. Returns a wait hint."""
        wait_s = 1.0
        if self._draining:
            return wait_s
        for name in self.models:
            wait_s = min(wait_s, self._start_calls(name))
            self.metrics.gauges(
                name,
                len(self.waiting[name]) + self.backlog.ready_count(name),
                self.limiters[name].in_flight,
            )
        for track in self.backlog.jobs_to_read(
            self.settings.max_items_per_batch
        ):
            track.loading = True
            self._spawn(self._read_window(track))
        return wait_s

    def _start_calls(self, name: str) -> float:
        """Start what the limiter allows; claim more when running low.

        Called by the scheduler and, so a freed slot is refilled at once,
        by every call that finishes and every claim that lands.

        Returns:
            Seconds until a rate limit lets the next call start (1 s when
            only a finishing call can free a slot).
        """
        model = self.models.get(name)
        if model is None or self._draining:
            return 1.0
        limiter = self.limiters[name]
        waiting = self.waiting[name]
        wait_s = 1.0
        while waiting and self.scheduling.batch_may_start(
            self._chat_waiters[name]
        ):
            item = waiting[0]
            tokens = self._estimate(item)
            delay = limiter.start_delay(tokens)
            if delay > 0:
                if not math.isinf(delay):
                    wait_s = delay
                break
            reservation = limiter.try_start(tokens)
            if reservation is None:
                break
            waiting.popleft()
            self._spawn(self._run(model, item, reservation))
        if name not in self._claiming and limiter.share.concurrency > 0:
            amount = self.scheduling.claim_size(
                len(waiting),
                limiter.capacity,
                self.settings.max_items_per_batch,
            )
            candidates = self.backlog.take(name, amount)
            if candidates:
                self._claiming.add(name)
                self._spawn(self._claim(name, candidates))
        return wait_s

    def _estimate(self, item: Item) -> int:
        return estimate_tokens(
            item.get("systemPrompt"),
            item["userContent"],
            item.get("maxTokens"),
        )

    async def _claim(self, model: str, candidates: list[Item]) -> None:
        self._claims += 1
        owner = f"{self.holder}/{self._claims}"
        began = time.monotonic()
        try:
            try:
                claimed = await self._items.claim(
                    candidates, owner, self._lease_seconds(model)
                )
                self.metrics.timed("claim", time.monotonic() - began)
            except Exception as error:
                # The claim may or may not have been applied: ask the
                # database (once it answers) which items carry our lease.
                log.warning("claim_failed", model=model, error=str(error))
                ids = [item["_id"] for item in candidates]
                claimed = await self._persist(
                    lambda: self._items.claimed_by(ids, owner), "claim check"
                )
                self._put_back(model, candidates, claimed)
            # Held until their outcome is written: their leases are
            # renewed meanwhile, and never taken back by our own poll.
            for item in claimed:
                self.held[item["_id"]] = item
            # Another claim for the model may start while this one's
            # items are prepared.
            self._claiming.discard(model)
            await self._persist(
                lambda: self._mark_started(claimed), "mark started"
            )
            runnable = await self._persist(
                lambda: self._prepare(model, claimed), "prepare items"
            )
        finally:
            self._claiming.discard(model)
            self._wake.set()
        self.waiting[model].extend(runnable)
        self._start_calls(model)

    def _put_back(
        self, model: str, candidates: list[Item], claimed: list[Item]
    ) -> None:
        """Queue again the candidates of a claim that did not apply.

        Items a successful claim did not get are no longer PENDING
        (taken, canceled): they are dropped instead.
        """
        taken = {item["_id"] for item in claimed}
        by_job: dict[ObjectId, list[Item]] = defaultdict(list)
        for item in candidates:
            if item["_id"] not in taken:
                by_job[item["jobId"]].append(item)
        for job_id, items in by_job.items():
            self.backlog.put_back(job_id, model, items)

    async def _persist(
        self, operation: Callable[[], Awaitable[T]], what: str
    ) -> T:
        """Run a database step until it succeeds.

        The database may be briefly gone; claimed items wait meanwhile,
        under their lease.
        """
        failures = 0
        while True:
            try:
                return await operation()
            except Exception as error:
                failures += 1
                log.warning("database_step_retry", step=what, error=str(error))
                await asyncio.sleep(
                    backoff_s(
                        failures, STEP_BACKOFF_S, cap_s=STEP_MAX_BACKOFF_S
                    )
                )

    async def _mark_started(self, items: list[Item]) -> None:
        """Record the first claim of each job (its status: PROCESSING)."""
        fresh = {
            item["jobId"]
            for item in items
            if (t := self.backlog.jobs.get(item["jobId"])) is not None
            and not t.started
        }
        if fresh:
            await self._items.mark_started(fresh)
            for job_id in fresh:
                self.backlog.jobs[job_id].started = True

    def _lease_seconds(self, model: str) -> float:
        timeout = float(self.models[model].config.get("timeoutSeconds", 120))
        return max(self.settings.lease_seconds, 2 * timeout + 30)

    async def _prepare(self, model: str, items: list[Item]) -> list[Item]:
        """Resolve prompts and serve cached results; return the rest."""
        missing = self.prompt_cache.missing(
            (i["promptId"], i["promptVersion"])
            for i in items
            if i.get("promptId") is not None
        )
        # Read now: used for this batch even if the cache drops some.
        read = await self._items.system_prompts(missing) if missing else {}
        self.prompt_cache.update(read)
        for item in items:
            if item.get("promptId") is not None:
                version = (item["promptId"], item["promptVersion"])
                text = read.get(version) or self.prompt_cache.get(version)
                item["systemPrompt"] = text
        cacheable = {
            self._cache_key(item): item
            for item in items
            if self._cacheable(item)
        }
        hits = (
            await self._items.cached_results(list(cacheable))
            if cacheable
            else {}
        )
        runnable = []
        for item in items:
            key = self._cache_key(item) if self._cacheable(item) else None
            if key is not None and key in hits:
                result = {**hits[key], "cached": True, "cost": 0.0}
                self._writer.add(
                    Outcome(item=item, status=S.PROCESSED, result=result)
                )
            else:
                runnable.append(item)
        return runnable

    def _cacheable(self, item: Item) -> bool:
        track = self.backlog.jobs.get(item["jobId"])
        cache = track.cache if track else item.get("cache", False)
        return bool(cache) and item.get("temperature") == 0

    def _cache_key(self, item: Item) -> str:
        return cache_key(
            self._cache_scope(item),
            item["model"],
            item.get("systemPrompt"),
            item["userContent"],
            item.get("temperature"),
            item.get("maxTokens"),
        )

    def _cache_scope(self, item: Item) -> str:
        """Whose cache an item uses: its client's, or a shared one.

        A model's cache is shared only when an admin set ``sharedCache``.
        """
        model = self.models.get(item["model"])
        if model is not None and model.shared_cache:
            return SHARED_CACHE_SCOPE
        track = self.backlog.jobs.get(item["jobId"])
        client_id = item.get("clientId") or (track and track.client_id)
        return f"client:{client_id}"

    # -- one call ------------------------------------------------------

    async def _run(
        self, model: ServedModel, item: Item, reservation: Reservation
    ) -> None:
        limiter = self.limiters[model.name]
        used: int | None = None
        with bound_context(
            job_id=str(item["jobId"]),
            item_id=str(item["_id"]),
            model=model.name,
        ):
            try:
                completion = await self._call(model, item_request(item))
                used = completion.usage.total_tokens
                outcome = self._success(model, item, completion)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, RateLimitError):
                    limiter.rate_limited()
                outcome = self._failure(model, item, error)
            finally:
                limiter.finish(reservation, used)
                self._start_calls(model.name)
            self._writer.add(outcome)

    async def _call(
        self, model: ServedModel, request: CompletionRequest
    ) -> Completion:
        if model.key_error is not None:
            raise model.key_error
        return await self._provider.complete(
            model.config, request, model.api_key
        )

    def _success(
        self, model: ServedModel, item: Item, completion: Completion
    ) -> Outcome:
        usage = completion.usage
        cost = model.pricing.cost(usage.input_tokens, usage.output_tokens)
        self.metrics.call_finished(
            model.name,
            completion.latency_ms,
            usage.input_tokens,
            usage.output_tokens,
        )
        result = {
            "text": completion.text,
            "finishReason": completion.finish_reason,
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "latencyMs": round(completion.latency_ms, 1),
            "cost": cost,
            "cached": False,
            "model": completion.model,
            "responseId": completion.response_id,
        }
        return Outcome(
            item=item,
            status=S.PROCESSED,
            result=result,
            cost=cost,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )

    def _failure(
        self, model: ServedModel, item: Item, error: Exception
    ) -> Outcome:
        decision = self._retry.decide(
            error,
            item.get("attempts", 1),
            item.get("maxAttempts", 3),
            self._rng,
        )
        record = error_record(error)
        moved = self.fallbacks.outcome(item, error, decision, record)
        if moved is not None:
            return moved
        if decision.retry:
            self.metrics.retried(model.name, str(record["type"]))
            log.info(
                "item_retry",
                error_type=record["type"],
                error=record["message"],
                delay_s=round(decision.delay_s, 2),
                attempts=item.get("attempts"),
            )
            return Outcome(
                item=item,
                status=S.PENDING,
                error=record,
                next_attempt_at=utcnow() + timedelta(seconds=decision.delay_s),
            )
        log.warning(
            "item_failed",
            error_type=record["type"],
            error=record["message"],
            attempts=item.get("attempts"),
        )
        return Outcome(item=item, status=S.FAILED, error=record)

    async def _written(self, report: WriteReport) -> None:
        """After a batch is written: schedule retries, count outcomes."""
        self.metrics.timed("write", report.seconds)
        cache: dict[str, dict[str, Any]] = {}
        canceled: list[Item] = []
        for outcome in report.written + report.lost:
            self.held.pop(outcome.item["_id"], None)
        for outcome in report.written:
            item = outcome.item
            self.metrics.item_finished(item["model"], outcome.status)
            if outcome.status == S.PENDING and self._is_canceled(
                item["jobId"]
            ):
                canceled.append(item)
            elif outcome.status == S.PENDING and self.fallbacks.settle(
                outcome
            ):
                pass  # another provider's worker takes it over
            elif outcome.status == S.PENDING and self._draining:
                # A retry nobody here will run: the successor will.
                self._handed_over.append(item["_id"])
            elif outcome.status == S.PENDING:
                for key in ("leaseOwner", "leaseExpiresAt"):
                    item.pop(key, None)
                item["status"] = S.PENDING
                due = outcome.next_attempt_at or utcnow()
                delay = max(0.0, (due - utcnow()).total_seconds())
                self.backlog.schedule_retry(item, time.monotonic() + delay)
            if (
                outcome.result
                and not outcome.result.get("cached")
                and self._cacheable(item)
            ):
                cache[self._cache_key(item)] = outcome.result
        if canceled:
            self._spawn(self._cancel_items(canceled))
        if cache:
            await self._store_cache(cache)
        for outcome in report.lost:
            log.warning(
                "result_discarded",
                item_id=str(outcome.item["_id"]),
                reason="lease lost to another worker",
            )
        self._wake.set()

    async def _store_cache(self, entries: dict[str, dict[str, Any]]) -> None:
        try:
            await self._items.store_cached(entries)
        except Exception as error:
            log.warning("cache_store_failed", error=str(error))

    # -- helpers -------------------------------------------------------

    async def _watch_loop_lag(self) -> None:
        """Measure how late the event loop runs a timer (a load signal).

        A busy loop delays every provider call and database reply; the
        moving average is in :meth:`stats` and the dashboard.
        """
        interval = 0.1
        while True:
            began = time.monotonic()
            await asyncio.sleep(interval)
            lag_ms = (time.monotonic() - began - interval) * 1000
            self._loop_lag_ms = 0.9 * self._loop_lag_ms + 0.1 * lag_ms
            self.metrics.loop_lag(self._loop_lag_ms)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        # A fresh context: a task spawned while a call's job and item ids
        # are bound must not log under them.
        task = asyncio.get_running_loop().create_task(
            coroutine, context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "worker_task_failed",
                worker=self.name,
                error=repr(task.exception()),
            )
