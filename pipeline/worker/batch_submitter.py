"""The batch submitter: a worker's items through its provider's batch API.

It stands beside the live engine and shares only the item store (claims,
the journaled finish) with it. :meth:`BatchSubmitter.submit` turns
PENDING items of one model into provider batches (record, claim, submit,
mark submitted); :meth:`BatchSubmitter.advance` moves every open record
of the provider on: submits a ``claimed`` one (after looking for it at
the vendor, by its label or, where batches keep none, in the vendor's
list of the key's batches, so a crash never submits twice), polls a
``submitted`` one and, once it has ended, writes its items' outcomes
(:func:`~pipeline.worker.provider_batches.decide_line`) and closes it.
The worker runs :meth:`advance` on a timer; a restarted worker simply
runs it again. See :mod:`pipeline.worker.provider_batches` for the design.
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
from pipeline.states import Status
from pipeline.store.by_id import MAX_IDS_PER_QUERY, chunks
from pipeline.store.document_collection import utcnow
from pipeline.worker.batch_ledger import BatchLedger
from pipeline.worker.item_store import Item, ItemStore, Outcome
from pipeline.worker.provider_batches import (
    ProviderBatchRecord,
    decide_line,
)
from pipeline.worker.requests import item_request
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
    """

    name: str
    config: Mapping[str, Any]
    api_key: str | None
    pricing: Pricing


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
            errors to retry, lines that never ran) of jobs not canceled:
            nobody else queues them again.
        """
        again: list[Outcome] = []
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
                    await self._resume(record, model)
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
    ) -> None:
        """Finish a submission a dead worker left half done."""
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
                return
            if listed is not None:
                await self.ledger.mark_submitted(record, listed, self.clock())
                return
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
                return
        if not held:
            await self.ledger.mark_collected(record, self.clock())
            return
        await self._send(record, model, held)

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
        if not record.cancel_requested and await self._jobs_canceled(record):
            await self.client.cancel(model.config, model.api_key, record.ref)
            await self.ledger.mark_cancel_requested(record)
            log.info("provider_batch_cancel", batch=record.ref.batch_id)
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
        outcomes = []
        for item in held:
            decision = decide_line(
                item,
                lines.get(str(item["_id"])),
                pricing=model.pricing,
                record=record,
                policy=self.policy,
                rng=self.rng,
                now=now,
            )
            outcomes.append(
                Outcome(
                    item=item,
                    status=decision.status,
                    result=decision.result,
                    error=decision.error,
                    next_attempt_at=decision.next_attempt_at,
                    cost=decision.cost,
                    input_tokens=decision.input_tokens,
                    output_tokens=decision.output_tokens,
                    # Written with the outcome, so a crash between two
                    # writes cannot give an attempt back twice.
                    attempts=decision.attempts,
                )
            )
        written: list[Outcome] = []
        for chunk in chunks(outcomes, MAX_IDS_PER_QUERY):
            written += (await self.items.finish(list(chunk))).written
        # Lines of canceled jobs that never ran go on to CANCELED, as the
        # live engine does with items put back after a cancel.
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
