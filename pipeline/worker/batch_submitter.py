"""The batch submitter: a worker's items through its provider's batch API.

It stands beside the live engine and shares only the item store (claims,
the journaled finish) with it. :meth:`BatchSubmitter.submit` turns
PENDING items of one model into provider batches (record, claim, submit,
mark submitted), after answering from the result cache those it can (as
the live engine does; batch answers are stored there too);
:meth:`BatchSubmitter.advance` moves every open record of the provider
on: submits a ``claimed`` one (after looking for it at the vendor, by
its label or, where batches keep none, in the vendor's list of the
key's batches, so a crash never submits twice), polls a ``submitted``
one and, once it has ended, writes its items' outcomes
(:func:`~pipeline.worker.provider_batches.decide_line`) and closes it;
items whose deadline comes near leave their batch for live calls
(:mod:`pipeline.worker.batch_deadline`). The worker runs
:meth:`advance` on a timer; a restarted worker simply runs it again.
See :mod:`pipeline.worker.provider_batches` for the design.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from pipeline.catalog import Pricing
from pipeline.logging import get_logger
from pipeline.settings import Settings
from pipeline.states import Status
from pipeline.store.by_id import MAX_IDS_PER_QUERY, chunks
from pipeline.store.document_collection import utcnow
from pipeline.worker.batch_deadline import DeadlineRule
from pipeline.worker.batch_ledger import BatchLedger
from pipeline.worker.item_store import Item, ItemStore, Outcome
from pipeline.worker.provider_batches import (
    ProviderBatchRecord,
    decide_line,
)
from pipeline.worker.requests import item_request, result_cache_key
from pipeline.worker.retry import RetryPolicy
from providers.base import Completion
from providers.batch import (
    BatchClient,
    BatchRequest,
    LineError,
    ProviderBatchRef,
)
from providers.errors import ProviderError, TransientError

log = get_logger(__name__)

#: How long batch items stay leased: the vendors' 24 h window, a margin.
BATCH_LEASE_SECONDS = 26 * 3600.0
#: How far before a record's creation a lost batch is looked for.
_FIND_MARGIN = timedelta(minutes=5)
#: How long items answered from the result cache stay leased (their
#: claim and their outcome are two writes in a row).
_CACHE_LEASE_SECONDS = 300.0
#: Result fields that say how a batch answer came: not cached with it.
_BATCH_ONLY_FIELDS = ("via", "providerBatchId")
#: How long after its record a dead worker's batch may have been made
#: (the claim, then the vendor's call): later batches are not its own.
_SUBMIT_WINDOW = timedelta(hours=1)


class _Undecided(Exception):
    """A batch that may be the record's own is still running."""


@dataclass
class BatchModel:
    """What the submitter needs of a catalog model.

    Attributes:
        name: The catalog name.
        config: The provider config.
        api_key: The key from this process's environment.
        pricing: Its prices (the batch price applies).
        shared_cache: Whether clients share its result cache.
    """

    name: str
    config: Mapping[str, Any]
    api_key: str | None
    pricing: Pricing
    shared_cache: bool = False


class BatchSubmitter:
    """Submits, polls and collects one provider's batches.

    Args:
        provider: The provider's registry name.
        client: Its batch client.
        items: The worker's item store (its own lane).
        ledger: The provider batch records.
        models: The catalog models it may submit for, by name.
        policy: The retry policy of live calls.
        rng: Source of retry jitter.
        clock: The current time (tests move it).
        owner: The worker role whose records these are: it writes them
            and moves only them, so a restarted worker (the same role)
            takes its records back and two replicas never poll one batch.
        rule: When items must leave a batch for their deadline
            (``BATCH_SAFETY_MARGIN`` before it, by default).
        replicas: The provider's worker replicas now: records of a
            replica beyond them are taken over (see
            :meth:`BatchLedger.adopt_orphans`).
    """

    def __init__(
        self,
        provider: str,
        client: BatchClient[Any, Any],
        items: ItemStore,
        ledger: BatchLedger,
        models: Mapping[str, BatchModel],
        *,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        rule: DeadlineRule | None = None,
        replicas: int = 1,
    ) -> None:
        self.provider = provider
        self.client = client
        self.items = items
        self.ledger = ledger
        self.models = models
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.Random()
        self.clock = clock
        self.owner = owner
        self.replicas = replicas
        self.rule = rule or DeadlineRule(
            timedelta(seconds=Settings.batch_safety_margin)
        )

    async def submit(
        self, model_name: str, items: list[Item]
    ) -> list[ProviderBatchRecord]:
        """Send PENDING items of one model to provider batches.

        Args:
            model_name: The catalog model of every item.
            items: Candidates (read earlier; others may take some).

        Returns:
            The records made, submitted (items others took are left out).
        """
        model = self.models[model_name]
        await self._resolve_prompts(items)
        items = await self._serve_cached(model, items)
        by_id = {str(item["_id"]): item for item in items}
        requests = [
            BatchRequest(custom_id, item_request(item))
            for custom_id, item in by_id.items()
        ]
        records = []
        for group in self.client.split(model.config, requests):
            group_items = [by_id[r.custom_id] for r in group]
            record = ProviderBatchRecord(
                id=ObjectId(),
                model=model.name,
                provider=self.provider,
                item_ids=[item["_id"] for item in group_items],
                created_at=self.clock(),
                job_ids=sorted({item["jobId"] for item in group_items}),
                owner=self.owner,
                deadline=_earliest_deadline(group_items),
            )
            await self.ledger.add(record)
            # A few ids per update: one update of a vendor-sized batch
            # (up to 100,000 items) can outlast the database's timeout.
            claimed = []
            for chunk in chunks(group_items, MAX_IDS_PER_QUERY):
                claimed += await self.items.claim(
                    list(chunk), record.lease_owner, BATCH_LEASE_SECONDS
                )
            if not claimed:
                await self.ledger.mark_collected(record, self.clock())
                continue
            await self.items.mark_started({i["jobId"] for i in claimed})
            await self._send(record, model, claimed)
            records.append(record)
        return records

    async def advance(self) -> list[Outcome]:
        """Move every open record of this owner one step on.

        Returns:
            The outcomes written that put items back to PENDING (line
            errors to retry, lines that never ran, items taken back for
            their deadline) of jobs not canceled: nobody else queues
            them again.
        """
        again: list[Outcome] = []
        if self.owner is not None:
            adopted = await self.ledger.adopt_orphans(
                self.provider, self.owner, self.replicas
            )
            if adopted:
                log.warning(
                    "provider_batches_adopted",
                    records=adopted,
                    reason="their worker replica no longer runs",
                )
        records = await self.ledger.open_records(self.provider, self.owner)
        for record in records:
            model = self.models.get(record.model)
            if model is None:
                continue
            # One batch failing (the vendor or the database briefly
            # gone) must not hold the others back: it is tried again in
            # the next round.
            try:
                if record.state == "claimed":
                    again += await self._resume(record, model)
                else:
                    again += await self._check(record, model)
            except Exception as error:
                log.warning(
                    "provider_batch_step_failed",
                    record=str(record.id),
                    model=record.model,
                    error=str(error),
                )
        return again

    async def _send(
        self, record: ProviderBatchRecord, model: BatchModel, items: list[Item]
    ) -> None:
        await self._resolve_prompts(items)
        requests = [
            BatchRequest(str(item["_id"]), item_request(item))
            for item in items
        ]
        try:
            ref = await self.client.submit(
                model.config, model.api_key, requests, label=str(record.id)
            )
        except ProviderError as error:
            if error.retryable:
                raise  # the record stays claimed: the next round resumes
            await self._refused(record, model, items, error)
            return
        await self.ledger.mark_submitted(record, ref, self.clock())
        log.info(
            "provider_batch_submitted",
            model=model.name,
            items=len(items),
            batch=ref.batch_id,
        )

    async def _refused(
        self,
        record: ProviderBatchRecord,
        model: BatchModel,
        items: list[Item],
        error: ProviderError,
    ) -> None:
        """Settle a batch the provider refused for good.

        A missing or wrong key, a request it rejects: every submission
        would be refused alike, so each item's line is that error,
        decided as a live call's would be (a permanent error fails it).
        """
        log.warning(
            "provider_batch_refused",
            model=model.name,
            items=len(items),
            error=error.message,
        )
        lines: dict[str, Completion | LineError] = {
            str(item["_id"]): LineError(error) for item in items
        }
        await self._write(record, model, lines)
        await self.ledger.mark_collected(record, self.clock())

    async def _resume(
        self, record: ProviderBatchRecord, model: BatchModel
    ) -> list[Outcome]:
        """Finish a submission a dead worker left half done.

        Items whose deadline is near leave the record first: whatever
        the vendor may hold of it, their answers would not be written.

        Returns:
            Items taken back for their deadline instead of being sent.
        """
        held = await self._held(record)
        back: list[Outcome] = []
        if self.rule.due_back(record.deadline):
            back = await self._release_due(record, held)
            held = await self._held(record)
        if self.client.can_list and not self.client.can_find and held:
            try:
                listed = await self._listed(record, model, held)
            except _Undecided as undecided:
                log.info(
                    "provider_batch_resume_waits",
                    record=str(record.id),
                    batch=str(undecided),
                )
                return back
            if listed is not None:
                await self.ledger.mark_submitted(record, listed, self.clock())
                return back
        if self.client.can_find:
            ref = await self.client.find(
                model.config,
                model.api_key,
                str(record.id),
                since=record.created_at - _FIND_MARGIN,
                line_ids=[str(item["_id"]) for item in held],
            )
            if ref is not None:
                await self.ledger.mark_submitted(record, ref, self.clock())
                return back
        if not held:
            await self.ledger.mark_collected(record, self.clock())
            return back
        await self._send(record, model, held)
        return back

    async def _listed(
        self, record: ProviderBatchRecord, model: BatchModel, held: list[Item]
    ) -> ProviderBatchRef | None:
        """The batch a dead worker made of a record, where none is labelled.

        Any batch the key created between the record's creation (less a
        margin for clock drift) and the end of its submission window, of
        as many requests as the record holds items, may be it: while one
        runs, the record waits for a later round; once all have ended,
        the one whose lines are the record's items is it.

        Returns:
            The record's batch, or None when the vendor's list shows none
            (the record is submitted).

        Raises:
            _Undecided: A batch that may be the record's is still running.
        """
        ids = {str(item["_id"]) for item in held}
        listed = await self.client.created_between(
            model.config,
            model.api_key,
            record.created_at - _FIND_MARGIN,
            record.created_at + _SUBMIT_WINDOW,
        )
        candidates = [b for b in listed if b.status.total == len(ids)]
        # Wait for every candidate to end before reading any one's lines,
        # so a long wait does not download the same results every round.
        for batch in candidates:
            if not batch.status.ended:
                raise _Undecided(batch.ref.batch_id)
        for batch in candidates:
            lines = {
                custom_id
                async for custom_id, _ in self.client.results(
                    model.config, model.api_key, batch.ref
                )
            }
            if lines == ids:
                return batch.ref
        return None

    async def _check(
        self, record: ProviderBatchRecord, model: BatchModel
    ) -> list[Outcome]:
        assert record.ref is not None
        status = await self.client.poll(
            model.config, model.api_key, record.ref
        )
        if not status.ended:
            if record.cancel_requested:
                return []
            # Polled first: a batch that has ended is collected, neither
            # cancelled (the vendor would refuse) nor left early.
            taken_back: list[Outcome] = []
            if await self._jobs_canceled(record):
                await self._cancel(record, model, "its jobs were canceled")
            elif self.rule.due_back(record.deadline):
                taken_back = await self._take_back(record, model)
            if not record.cancel_requested:
                return taken_back
            status = await self.client.poll(
                model.config, model.api_key, record.ref
            )
            if not status.ended:
                return []
        lines: dict[str, Completion | LineError] = {}
        async for custom_id, line in self.client.results(
            model.config, model.api_key, record.ref
        ):
            lines[custom_id] = line
        if status.state == "failed":
            # None of its lines ran, but a batch that failed may fail
            # again: each try spends an attempt, so maxAttempts bounds
            # the resubmissions (lines of an expired or cancelled batch
            # give theirs back).
            failure = TransientError(
                "the provider batch failed: "
                + (status.message or "no reason given"),
                provider=self.provider,
                model=model.name,
            )
            lines = {str(i): LineError(failure) for i in record.item_ids}
        again = await self._write(record, model, lines)
        await self.ledger.mark_collected(record, self.clock())
        log.info(
            "provider_batch_collected",
            model=model.name,
            batch=record.ref.batch_id,
            state=status.state,
            answered=sum(isinstance(v, Completion) for v in lines.values()),
        )
        return again

    async def _cancel(
        self, record: ProviderBatchRecord, model: BatchModel, why: str
    ) -> None:
        """Ask the vendor to stop a batch; its lines are collected as usual.

        Lines already answered are kept; the others come back as never
        run (their attempt given back).
        """
        assert record.ref is not None
        await self.client.cancel(model.config, model.api_key, record.ref)
        await self.ledger.mark_cancel_requested(record)
        log.info("provider_batch_cancel", batch=record.ref.batch_id, why=why)

    async def _take_back(
        self, record: ProviderBatchRecord, model: BatchModel
    ) -> list[Outcome]:
        """Take the items whose deadline is near out of a running batch.

        If every item it holds is due, the batch is cancelled (what it
        answered meanwhile is kept, the rest comes back as never run).
        Otherwise it runs on for the others and the due items leave it
        at once (:meth:`_release_due`).

        Returns:
            The items put back to PENDING, for the worker to run live.
        """
        held = await self._held(record)
        if held and all(self.rule.due_back(i.get("deadline")) for i in held):
            await self._cancel(record, model, "its deadline is near")
            return []
        return await self._release_due(record, held)

    async def _release_due(
        self, record: ProviderBatchRecord, held: list[Item]
    ) -> list[Outcome]:
        """Put the held items whose deadline is near back to PENDING.

        Their attempt is given back: the vendor may still answer their
        lines, but those answers are not written (the items are no
        longer leased to the batch), so nothing is processed twice.
        The record keeps the earliest deadline of the items left.

        Returns:
            The items put back (of jobs not canceled), as outcomes.
        """
        due = [i for i in held if self.rule.due_back(i.get("deadline"))]
        back: list[Item] = []
        if due:
            back, _ = await self.items.release_leases(
                due, reason="taken back for its deadline", attempted=False
            )
            log.info(
                "provider_batch_items_taken_back",
                record=str(record.id),
                items=len(back),
            )
        due_ids = {i["_id"] for i in due}
        kept = [i for i in held if i["_id"] not in due_ids]
        await self.ledger.set_deadline(record, _earliest_deadline(kept))
        outcomes = [
            Outcome(
                item=item,
                status=Status.PENDING,
                attempts=max(0, int(item.get("attempts", 1)) - 1),
            )
            for item in back
        ]
        return await self._pending_again(record, outcomes)

    async def _serve_cached(
        self, model: BatchModel, items: list[Item]
    ) -> list[Item]:
        """Answer items from the result cache; return the others.

        As the live engine does: items of ``cache: true`` jobs at
        temperature 0 whose request was answered before (the same
        client's, or anyone's on a model with a shared cache) are
        claimed and written PROCESSED with that answer, free.
        """
        keys = {
            item["_id"]: result_cache_key(item, model.shared_cache)
            for item in items
            if _cacheable(item)
        }
        if not keys:
            return items
        hits = await self.items.cached_results(list(keys.values()))
        found = [i for i in items if keys.get(i["_id"]) in hits]
        if not found:
            return items
        owner = f"{self.items.lane}/cache/{ObjectId()}"
        claimed = []
        for chunk in chunks(found, MAX_IDS_PER_QUERY):
            claimed += await self.items.claim(
                list(chunk), owner, _CACHE_LEASE_SECONDS
            )
        if claimed:
            await self.items.mark_started({i["jobId"] for i in claimed})
            await self.items.finish(
                [
                    Outcome(
                        item=item,
                        status=Status.PROCESSED,
                        result={
                            **hits[keys[item["_id"]]],
                            "cached": True,
                            "cost": 0.0,
                        },
                    )
                    for item in claimed
                ]
            )
        served = {i["_id"] for i in found}
        return [i for i in items if i["_id"] not in served]

    async def _store_cached(
        self, model: BatchModel, outcomes: list[Outcome]
    ) -> None:
        """Keep the answers of cacheable items for identical requests."""
        entries = {
            result_cache_key(o.item, model.shared_cache): {
                k: v
                for k, v in o.result.items()
                if k not in _BATCH_ONLY_FIELDS
            }
            for o in outcomes
            if o.result is not None and _cacheable(o.item)
        }
        if not entries:
            return
        try:
            await self.items.store_cached(entries)
        except Exception as error:
            # The answers are written; only their reuse is lost.
            log.warning("cache_store_failed", error=str(error))

    async def _resolve_prompts(self, items: list[Item]) -> None:
        """Set the system prompt of items that name a prompt version.

        Items store their prompt by reference; the live engine resolves
        it after its claim, the submitter before building requests (and
        again for items read back when resuming a record).
        """
        unresolved = [
            item
            for item in items
            if item.get("promptId") is not None
            and not item.get("systemPrompt")
        ]
        if not unresolved:
            return
        texts = await self.items.system_prompts(
            {(item["promptId"], item["promptVersion"]) for item in unresolved}
        )
        for item in unresolved:
            key = (item["promptId"], item["promptVersion"])
            item["systemPrompt"] = texts.get(key)

    async def _held(self, record: ProviderBatchRecord) -> list[Item]:
        """The record's items still leased to it."""
        found = await self.items.items_by_id(list(record.item_ids))
        return [
            item
            for item in found
            if item.get("status") == Status.PROCESSING
            and item.get("leaseOwner") == record.lease_owner
        ]

    async def _write(
        self,
        record: ProviderBatchRecord,
        model: BatchModel,
        lines: Mapping[str, Completion | LineError],
    ) -> list[Outcome]:
        held = await self._held(record)
        now = self.clock()
        outcomes = [
            decide_line(
                item,
                lines.get(str(item["_id"])),
                pricing=model.pricing,
                record=record,
                policy=self.policy,
                rng=self.rng,
                now=now,
            )
            for item in held
        ]
        written: list[Outcome] = []
        for chunk in chunks(outcomes, MAX_IDS_PER_QUERY):
            written += (await self.items.finish(list(chunk))).written
        await self._store_cached(model, written)
        return await self._pending_again(record, written)

    async def _pending_again(
        self, record: ProviderBatchRecord, written: list[Outcome]
    ) -> list[Outcome]:
        """The outcomes that put items back to PENDING, to queue again.

        Those of canceled jobs go on to CANCELED, as the live engine
        does with items put back after a cancel.
        """
        canceled = await self._canceled_jobs(record)
        back = [
            o.item
            for o in written
            if o.status == Status.PENDING and o.item["jobId"] in canceled
        ]
        if back:
            await self.items.move(back, Status.PENDING, Status.CANCELED)
        return [
            o
            for o in written
            if o.status == Status.PENDING and o.item["jobId"] not in canceled
        ]

    async def _canceled_jobs(
        self, record: ProviderBatchRecord
    ) -> set[ObjectId]:
        if not record.job_ids:
            return set()
        docs = await self.items.jobs.find(
            {"_id": {"$in": list(record.job_ids)}}, {"status": 1}
        ).to_list()
        return {d["_id"] for d in docs if d["status"] == Status.CANCELED}

    async def _jobs_canceled(self, record: ProviderBatchRecord) -> bool:
        """Whether every job of the batch was canceled."""
        canceled = await self._canceled_jobs(record)
        return bool(record.job_ids) and canceled >= set(record.job_ids)


def _earliest_deadline(items: list[Item]) -> datetime | None:
    """The earliest deadline of some items (None: none has one)."""
    return min(
        (i["deadline"] for i in items if i.get("deadline")), default=None
    )


def _cacheable(item: Item) -> bool:
    """Whether an item's answer may come from, and go to, the cache.

    Items of ``cache: true`` jobs (stored on the item) at temperature 0,
    as for live calls.
    """
    return bool(item.get("cache")) and item.get("temperature") == 0
