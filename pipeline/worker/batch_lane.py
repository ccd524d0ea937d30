"""The batch lane: a worker's items of batch jobs, on their way to batches.

Part of :class:`~pipeline.worker.engine.ProviderWorker` for a provider
with a batch API. Items of ``batch`` jobs, and of ``auto`` jobs whose
deadline allows (the rule: :mod:`pipeline.worker.batch_deadline`), that
the worker finds (window reads, leases taken back, requeues: everything
the backlog is given passes :meth:`BatchLane.take`) are not queued for
live calls but collected here, per model. Every
``BATCH_SUBMIT_INTERVAL`` a round submits what was collected
(:meth:`BatchSubmitter.submit`, the vendor's limits splitting it into
several batches) and moves the worker's open provider batches on
(:meth:`BatchSubmitter.advance`: resume, poll, collect, cancel those
whose jobs were all canceled, take back items whose deadline is near).
Items a batch gives back (line errors to retry, lines that never ran,
items taken back) are collected again, for a later round once their
retry is due, or, when their deadline no longer allows a batch, handed
to the worker's live calls (its ``to_live``), as are collected
items still waiting when their deadline comes near.

The records are the worker's own: they carry its role (provider and
replica, not the code version) and a round moves no other, so a
restarted worker, or the next version's after a deploy, takes them
back; see
:mod:`pipeline.worker.provider_batches` for the limits of that.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from bson import ObjectId

from pipeline.logging import get_logger
from pipeline.settings import Settings
from pipeline.states import Status
from pipeline.store import Store
from pipeline.store.document_collection import utcnow
from pipeline.worker.batch_deadline import BATCH_MODES, DeadlineRule
from pipeline.worker.batch_ledger import BatchLedger
from pipeline.worker.batch_submitter import BatchModel, BatchSubmitter
from pipeline.worker.item_store import Item, ItemStore, Outcome
from pipeline.worker.retry import RetryPolicy
from pipeline.worker.served_model import ServedModel
from providers.batch import BatchClient, batch_client
from providers.errors import MissingDependencyError

log = get_logger(__name__)


class BatchLane:
    """Collects a worker's batch items and runs its rounds.

    Args:
        submitter: The provider's batch submitter (owner: the worker).
        interval: Seconds between rounds.
        models: The worker's served models now (they change on refresh).
        is_canceled: Whether a job was canceled (its items are dropped).
        to_live: Queues PENDING items, by id, for the worker's live calls
            (they pass :meth:`take` again on the way).

    Batch or live is decided by the submitter's rule: one clock and one
    margin for taking items and for taking them back.
    """

    def __init__(
        self,
        submitter: BatchSubmitter,
        interval: float,
        models: Callable[[], Mapping[str, ServedModel]],
        is_canceled: Callable[[ObjectId], bool],
        to_live: Callable[[list[ObjectId]], Awaitable[Any]],
    ) -> None:
        self.submitter = submitter
        self.interval = interval
        self._models = models
        self._is_canceled = is_canceled
        #: Per model, items waiting for the next round, by id.
        self.collected: dict[str, dict[ObjectId, Item]] = defaultdict(dict)
        self.rounds = 0
        self._to_live = to_live
        #: Items to hand to live calls (kept until handed over).
        self._for_live: set[ObjectId] = set()
        self.sent_live = 0

    @property
    def rule(self) -> DeadlineRule:
        """Batch or live, by deadline."""
        return self.submitter.rule

    def take(self, item: Item) -> bool:
        """Collect an item for a batch; False leaves it to live calls.

        Items of ``batch`` jobs, and of ``auto`` jobs whose deadline
        allows, are collected. A model whose key is missing runs live
        too: its calls fail there at once with the error naming the
        variable to set.
        """
        if item.get("mode") not in BATCH_MODES:
            return False
        model = self._models().get(item["model"])
        if model is None or model.key_error is not None:
            return False
        if not self.rule.to_batch(item):
            return False
        self.collected[item["model"]].setdefault(item["_id"], item)
        return True

    def stats(self) -> dict[str, Any]:
        """Rounds run and items waiting, per model."""
        return {
            "rounds": self.rounds,
            "collected": {m: len(c) for m, c in self.collected.items()},
            "sentLive": self.sent_live,
        }

    async def run(self) -> None:
        """Run a round now (a restarted worker resumes at once), then on."""
        while True:
            try:
                await self.round()
            except Exception as error:
                log.warning("batch_round_failed", error=str(error))
            await asyncio.sleep(self.interval)

    async def round(self) -> None:
        """Submit what is due, then move the open provider batches on."""
        self.rounds += 1
        served = self._models()
        self.submitter.models = {
            name: BatchModel(
                name, m.config, m.api_key, m.pricing, m.shared_cache
            )
            for name, m in served.items()
        }
        for name in list(self.collected):
            if name not in served:
                continue
            try:
                await self._submit(name)
            except Exception as error:
                # Its items stay collected for the next round.
                log.warning(
                    "batch_submit_failed", model=name, error=str(error)
                )
        for outcome in await self.submitter.advance():
            self._again(outcome)
        await self._hand_to_live()

    async def aclose(self) -> None:
        """Close the batch client's connections."""
        await self.submitter.client.aclose()

    async def _submit(self, name: str) -> None:
        waiting = self.collected[name]
        now = utcnow()
        due: list[Item] = []
        for item_id, item in list(waiting.items()):
            if self._is_canceled(item["jobId"]):
                # The cancel sweep moves it to CANCELED.
                del waiting[item_id]
            elif not self.rule.to_batch(item):
                # Its deadline came near while it waited.
                del waiting[item_id]
                self._for_live.add(item_id)
            elif (item.get("nextAttemptAt") or now) <= now:
                due.append(item)
        if not due:
            return
        # Kept until submitted: a failed submission is tried next round
        # (items it claimed are no longer PENDING and drop out then).
        await self.submitter.submit(name, due)
        for item in due:
            waiting.pop(item["_id"], None)

    def _again(self, outcome: Outcome) -> None:
        """Collect an item a provider batch put back to PENDING."""
        item = outcome.item
        item.pop("leaseOwner", None)
        item.pop("leaseExpiresAt", None)
        item["status"] = Status.PENDING
        item["nextAttemptAt"] = outcome.next_attempt_at
        if outcome.attempts is not None:
            item["attempts"] = outcome.attempts
        if not self.take(item):
            self._for_live.add(item["_id"])

    async def _hand_to_live(self) -> None:
        """Queue for live calls the items no batch may take any more."""
        if not self._for_live:
            return
        ids = sorted(self._for_live)
        # Kept until handed over: a failure is tried again next round.
        await self._to_live(ids)
        self._for_live.difference_update(ids)
        self.sent_live += len(ids)
        log.info("batch_items_sent_live", items=len(ids))


def batch_lane(
    provider: str,
    worker: str,
    holder: str,
    store: Store,
    settings: Settings,
    models: Callable[[], Mapping[str, ServedModel]],
    is_canceled: Callable[[ObjectId], bool],
    to_live: Callable[[list[ObjectId]], Awaitable[Any]],
    *,
    policy: RetryPolicy,
    rng: random.Random,
) -> BatchLane | None:
    """The batch lane of a provider's worker, or None without a batch API.

    Args:
        provider: The provider's registry name.
        worker: The worker's role, its name without the code version
            (the owner of its records).
        holder: The worker's name and incarnation (its journal lane gets
            a ``/batches`` suffix, recovered as the worker's own).
        store: The database.
        settings: The settings (``BATCH_SUBMIT_INTERVAL``,
            ``BATCH_SAFETY_MARGIN``).
        models: The worker's served models now.
        is_canceled: Whether a job was canceled.
        to_live: Queues items, by id, for the worker's live calls.
        policy: The retry policy of live calls.
        rng: Source of retry jitter.
    """
    try:
        client: BatchClient[Any, Any] | None = batch_client(provider)
    except MissingDependencyError as error:
        log.warning("batch_client_unavailable", error=str(error))
        client = None
    if client is None:
        return None
    submitter = BatchSubmitter(
        provider,
        client,
        ItemStore(store, f"{holder}/batches"),
        BatchLedger(store),
        {},
        policy=policy,
        rng=rng,
        owner=worker,
        rule=DeadlineRule(timedelta(seconds=settings.batch_safety_margin)),
        replicas=settings.worker_replicas,
    )
    return BatchLane(
        submitter,
        settings.batch_submit_interval,
        models,
        is_canceled,
        to_live,
    )
