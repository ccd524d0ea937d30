"""The provider worker: from pending items to written results.

One :class:`ProviderWorker` serves every model of one provider. It is
wiring plus a life cycle: each concern is a part that owns its state and
is handed the parts it uses.

* :class:`~pipeline.worker.served_model.ServedModels`: the provider's
  catalog models and their limiters.
* :class:`~pipeline.worker.job_tracker.JobTracker`: the jobs followed,
  their windows read into the :class:`~pipeline.worker.backlog.Backlog`,
  cancel and requeue sweeps.
* :class:`~pipeline.worker.scheduler.Scheduler`: starts calls as the
  limiters allow, claims when a model's queue runs low, reads ahead, in
  the order and amounts of its
  :class:`~pipeline.worker.scheduling.SchedulingPolicy`.
* :class:`~pipeline.worker.claims.Claims`: leases, held until written
  and renewed meanwhile; :class:`~pipeline.worker.preparation.Preparation`:
  prompts and cached answers; :class:`~pipeline.worker.calls.Calls`: one
  call, one outcome; :class:`~pipeline.worker.writer.ResultWriter`:
  outcomes written in batches.
* :class:`~pipeline.worker.fallback.FallbackRouter`: an item whose
  provider is down moves to its model's next fallback (asked by
  ``Calls``); :class:`~pipeline.worker.handoffs.HandoffInbox`: items
  other providers' workers moved to this one's models.
* :class:`~pipeline.worker.recovery.Recovery`: the poll that finds
  stranded work and takes back lost leases;
  :class:`~pipeline.worker.limits_sync.LimitsSync`: shares of the model
  limits; :class:`~pipeline.worker.chat.Chat`: chat calls, ahead of
  items.
* For providers with a batch API, the batch lane
  (:mod:`pipeline.worker.batch_lane`): items of ``batch`` jobs, and of
  ``auto`` jobs whose deadline allows, are left to it, and its rounds
  submit them to provider batches, poll and collect.

On a deploy of new code a worker drains (stops claiming, finishes its
calls, gives back what it never sent) and its successor takes over (see
``begin_drain``, ``drained`` and ``take_over``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from bson import ObjectId

from pipeline.catalog import ModelCatalog
from pipeline.code_version import code_version
from pipeline.jobs.shapes import JobSummary
from pipeline.logging import get_logger
from pipeline.settings import Settings
from pipeline.states import Status
from pipeline.store import Store, create_mongo_client
from pipeline.store.deployed_version import DeployedVersion
from pipeline.store.document_collection import utcnow
from pipeline.worker.backlog import Backlog
from pipeline.worker.batch_lane import BatchLane, batch_lane
from pipeline.worker.calls import Calls
from pipeline.worker.chat import Chat
from pipeline.worker.claims import Claims
from pipeline.worker.fallback import FallbackRouter
from pipeline.worker.handoffs import HandoffInbox, SignalHandoff, inbox_id
from pipeline.worker.item_store import ItemStore, WriteReport
from pipeline.worker.job_tracker import JobTracker
from pipeline.worker.limits_sync import LimitsSync, SyncLimits
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.names import WorkerIdentity
from pipeline.worker.preparation import Preparation
from pipeline.worker.process import RoundTripCounter, cancel_all, tune_gc
from pipeline.worker.prompt_cache import PromptCache
from pipeline.worker.recovery import Recovery
from pipeline.worker.retry import RetryPolicy
from pipeline.worker.scheduler import Scheduler
from pipeline.worker.scheduling import DefaultScheduling, SchedulingPolicy
from pipeline.worker.served_model import ServedModels
from pipeline.worker.steps import until_done
from pipeline.worker.tasks import Tasks
from pipeline.worker.writer import ResultWriter
from providers.base import (
    Completion,
    CompletionRequest,
    LLMProvider,
    StreamEvent,
)

S = Status
log = get_logger(__name__)


class ProviderWorker:
    """Processes one provider's items; see the module docstring.

    Args:
        identity: Which worker this is, and this life of it.
        settings: The settings.
        sync_limits: The limits coordinator's exchange.
        store: The database (its item store, catalog and deployment
            record are read through it, under this worker's lane).
        provider: The provider's client.
        round_trips: Counts the database commands of ``store``'s client.
        metrics_exporters: Where metrics go (Ray's in an actor).
        retry_policy: Which errors are retried, and when.
        scheduling: Orders and sizes the work.
        seed: Seeds retry jitter (tests).
        signal_handoff: Tells another provider's worker that items
            fell back to its models (None: its poll finds them).
    """

    def __init__(
        self,
        identity: WorkerIdentity,
        settings: Settings,
        sync_limits: SyncLimits,
        *,
        store: Store,
        provider: LLMProvider,
        round_trips: RoundTripCounter | None = None,
        metrics_exporters: Mapping[str, Any] | None = None,
        retry_policy: RetryPolicy | None = None,
        scheduling: SchedulingPolicy | None = None,
        seed: int | None = None,
        signal_handoff: SignalHandoff | None = None,
    ) -> None:
        self.identity = identity
        self.name = identity.name
        self.incarnation = identity.incarnation
        self.holder = identity.holder
        self.settings = settings
        self._store = store
        self._round_trips = round_trips or RoundTripCounter()
        self.metrics = WorkerMetrics(identity.provider, metrics_exporters)
        self.items = ItemStore(store, identity.holder)
        self.served = ServedModels(
            identity.provider, ModelCatalog(store), settings
        )
        self.tasks = Tasks(identity.name)
        self._wake = asyncio.Event()
        wake = self._wake.set
        policy = scheduling or DefaultScheduling()
        self.backlog = Backlog(policy)
        rng = random.Random(seed)
        retry = retry_policy or RetryPolicy()
        self.fallbacks = FallbackRouter(
            identity.provider, identity.replicas, self.backlog, signal_handoff
        )
        self.calls = Calls(
            provider, retry, rng, self.metrics, fallbacks=self.fallbacks
        )
        self.handoffs = HandoffInbox(
            self.items.handoffs,
            inbox_id(identity.provider, identity.replica),
            self.items,
            self.backlog,
            lambda: self.served.models,
            self._wake,
        )
        self.tracker = JobTracker(
            identity,
            self.items,
            self.served,
            self.backlog,
            self.tasks,
            self.metrics,
            wake,
        )
        self.claims = Claims(
            self.items,
            self.served,
            self.backlog,
            self.metrics,
            identity.holder,
            renew_every=settings.poll_interval,
        )
        self.preparation = Preparation(
            self.items, self.served, self.backlog.jobs, PromptCache()
        )
        self.writer = ResultWriter(self.items, self._written)
        self.chat = Chat(
            self.served,
            self.calls,
            learn_models=self._learn_models,
            sync_limits=self._sync_limits,
            wake=wake,
            worker=identity.name,
        )
        self.scheduler = Scheduler(
            settings,
            self.served,
            self.backlog,
            policy,
            self.claims,
            self.preparation,
            self.calls,
            self.tracker,
            self.writer,
            self.tasks,
            self.metrics,
            chat_waiters=self.chat.waiters,
            wake=self._wake,
        )
        self.recovery = Recovery(
            identity,
            self.items,
            self.served,
            self.claims,
            self.tracker,
            self.backlog,
            self.metrics,
            handoffs=self.handoffs,
            has_work=self.scheduler.has_work,
            wake=wake,
        )
        self.limits = LimitsSync(
            identity.holder,
            self.served,
            self.scheduler.demand,
            sync_limits,
            self.metrics,
            wake,
        )
        # Items of batch jobs go to provider batches, not live calls.
        # Their records belong to the role (provider and replica, no
        # version): a restart or a deploy's successor takes them.
        self.batch_lane: BatchLane | None = batch_lane(
            identity.provider,
            identity.role,
            identity.holder,
            store,
            settings,
            lambda: self.served.models,
            self.tracker.is_canceled,
            self.adopt,
            policy=retry,
            rng=rng,
        )
        if self.batch_lane is not None:
            self.backlog.divert = self.batch_lane.take
        self._loops: list[asyncio.Task[Any]] = []
        self._started = False
        self._start_lock = asyncio.Lock()
        # Set by begin_drain (a deploy of other code retires this one).
        self._draining = False
        self._handed_over: list[ObjectId] = []
        self._loop_lag_ms = 0.0

    # -- life cycle ----------------------------------------------------

    async def start(self) -> None:
        """Check the deployed version, recover, start the loops (once)."""
        async with self._start_lock:
            if self._started or self._draining:
                return
            current = await DeployedVersion(self._store).current()
            if current not in (None, code_version(self.settings)):
                # A newer deploy took over (this actor was created or
                # restarted by a replica on its way out): its workers
                # own the work, and this one is about to be retired.
                self._retire()
                log.warning("worker_superseded", worker=self.name, by=current)
                return
            await self._learn_models()
            if self._draining:  # retired while starting: claim nothing
                return
            await self.recovery.poll_once()
            self._loops = [
                self._loop(self.scheduler.run(), "scheduler"),
                self._loop(
                    self.recovery.run(self.settings.poll_interval), "poller"
                ),
                self._loop(self.claims.keep_leases(), "leases"),
                self._loop(self.limits.run(), "syncer"),
                self._loop(self.writer.run(), "writer"),
                self._loop(self._watch_loop_lag(), "lag"),
            ]
            if self.batch_lane is not None:
                lane = self._loop(self.batch_lane.run(), "batches")
                self._loops.append(lane)
            self._started = True
            tune_gc()
            log.info(
                "worker_started",
                worker=self.name,
                incarnation=self.incarnation,
                models=sorted(self.served.models),
            )

    async def stop(self) -> None:
        """Finish running calls, write their outcomes, stop the loops."""
        if not self._started:
            return
        await self.tasks.wait(30)
        await cancel_all(self._loops)
        await self.writer.flush()
        await self._close()

    async def _close(self) -> None:
        await self.calls.provider.aclose()
        if self.batch_lane is not None:
            await self.batch_lane.aclose()
        self._started = False

    def _loop(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        return asyncio.create_task(coroutine, name=name)

    async def _learn_models(self) -> None:
        """Read the catalog's models, then sync their limits."""
        await self.served.refresh()
        await self._sync_limits()

    async def _sync_limits(self) -> None:
        await self.limits.once()

    # -- retirement (a deploy of other code) ----------------------------

    def _retire(self) -> None:
        self._draining = True
        self.scheduler.paused = True

    async def begin_drain(self, sync_limits: SyncLimits | None = None) -> None:
        """Stop claiming and reading; keep finishing what is running.

        Args:
            sync_limits: The successor's limits coordinator: reporting
                the calls still running there keeps its grants to the
                new workers within the limits while they finish.
        """
        self._retire()
        for task in self._loops:
            if task.get_name() in ("poller", "batches"):
                # Lease recovery, job tracking and the provider batches
                # (owned by the role, not the version) are the
                # successor's.
                await cancel_all([task])
        if sync_limits is not None:
            self.limits.exchange = sync_limits
            if self._started:
                try:
                    await self.limits.once()
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
        await self.tasks.drain()
        unstarted = self.scheduler.take_unstarted()
        if unstarted:
            given_back, _ = await until_done(
                lambda: self.items.release_leases(
                    unstarted,
                    reason="given back by a retired worker",
                    attempted=False,
                ),
                "give back unstarted items",
            )
            for item in unstarted:
                self.claims.release(item["_id"])
            self._handed_over += [item["_id"] for item in given_back]
        await cancel_all(self._loops)
        await until_done(self.writer.flush, "write outcomes")
        await self._close()
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
        self.recovery.take_over(names)

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
        for item in await self.items.items_by_id(ids):
            if item["jobId"] in self.backlog.jobs:
                queued += self.tracker.queue_pending(item["jobId"], [item])
        return queued

    # -- requests ------------------------------------------------------

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
        if set(summary.models) - set(self.served.models):
            # A model added since the last poll: learn it before reading
            # the job's items, or they would be skipped as not ours.
            await self._learn_models()
        self.tracker.track(summary)
        self._wake.set()

    async def complete(
        self, model: str, request: CompletionRequest
    ) -> Completion:
        """A chat completion under the model's limits (:class:`Chat`)."""
        await self.start()
        return await self.chat.complete(model, request)

    async def stream(
        self, model: str, request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        """A streamed chat completion under the model's limits."""
        await self.start()
        async for event in self.chat.stream(model, request):
            yield event

    async def ping(self) -> dict[str, Any]:
        """Start if needed and report health."""
        await self.start()
        return {"worker": self.name, "incarnation": self.incarnation}

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring, tests and benchmarks."""
        limiters = self.served.limiters
        return {
            "worker": self.name,
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "roundTrips": self._round_trips.count,
            "claims": self.claims.count,
            "polls": {
                "begun": self.recovery.polls_begun,
                "running": self.recovery.polls_running,
            },
            "jobs": len(self.backlog.jobs),
            "inFlight": {m: lim.in_flight for m, lim in limiters.items()},
            "shares": {m: li.share.concurrency for m, li in limiters.items()},
            "waiting": {m: len(q) for m, q in self.scheduler.waiting.items()},
            "unwritten": self.writer.pending,
            "loopLagMs": round(self._loop_lag_ms, 1),
            "batches": self.batch_lane.stats() if self.batch_lane else None,
            "fallbacks": {
                "moved": self.fallbacks.moved,
                "received": self.handoffs.received,
                "signals": self.handoffs.signals,
            },
            "metrics": self.metrics.snapshot(),
        }

    # -- after a write -------------------------------------------------

    async def _written(self, report: WriteReport) -> None:
        """After a batch is written: schedule retries, count outcomes."""
        self.metrics.timed("write", report.seconds)
        canceled = []
        for outcome in report.written + report.lost:
            self.claims.release(outcome.item["_id"])
        for outcome in report.written:
            item = outcome.item
            self.metrics.item_finished(item["model"], outcome.status)
            if outcome.status != S.PENDING:
                continue
            if self.tracker.is_canceled(item["jobId"]):
                canceled.append(item)
            elif self.fallbacks.settle(outcome):
                pass  # another provider's worker takes it over
            elif self._draining:
                # A retry nobody here will run: the successor will.
                self._handed_over.append(item["_id"])
            else:
                item.pop("leaseOwner", None)
                item.pop("leaseExpiresAt", None)
                item["status"] = S.PENDING
                due = outcome.next_attempt_at or utcnow()
                delay = max(0.0, (due - utcnow()).total_seconds())
                self.backlog.schedule_retry(item, time.monotonic() + delay)
        if canceled:
            self.tasks.spawn(self.tracker.cancel_items(canceled))
        await self.preparation.remember(report.written)
        for outcome in report.lost:
            log.warning(
                "result_discarded",
                item_id=str(outcome.item["_id"]),
                reason="lease lost to another worker",
            )
        self._wake.set()

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


def open_worker(
    provider: str,
    replica: int,
    settings: Settings,
    sync_limits: SyncLimits,
    *,
    store: Store | None = None,
    **options: Any,
) -> ProviderWorker:
    """A new life of a provider's worker, with its database and provider.

    Args:
        provider: The provider's registry name.
        replica: The replica index.
        settings: The settings (``DB_CONNECTION_STRING`` when no
            ``store`` is given: the client connects lazily).
        sync_limits: The limits coordinator's exchange.
        store: The database, if already open (tests).
        **options: More :class:`ProviderWorker` arguments.
    """
    from providers.registry import get_provider

    identity = WorkerIdentity.new(
        provider, replica, settings.worker_replicas, code_version(settings)
    )
    if store is None:
        if not settings.db_connection_string:
            raise RuntimeError("DB_CONNECTION_STRING is not set")
        round_trips = RoundTripCounter()
        store = Store(
            create_mongo_client(
                settings.db_connection_string,
                app_name=identity.name,
                event_listeners=[round_trips],
            ),
            settings.db_name,
        )
        options.setdefault("round_trips", round_trips)
    return ProviderWorker(
        identity,
        settings,
        sync_limits,
        store=store,
        provider=get_provider(provider),
        **options,
    )
