"""The worker's database operations on items and their jobs' counters.

Shaped for the embedded SecantusDB as much as for MongoDB (it serves
``_id`` lookups fast and pays for every secondary index): items are read
a window at a time by their computed ids (:mod:`pipeline.jobs.item_ids`)
and filtered here; every write is batched and addressed by ``_id``.

Writes that move a job's counters go through the lane's
:class:`~pipeline.worker.journal.Journal`, which keeps the counts and the
items in step without a transaction.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from bson import ObjectId
from pymongo import UpdateOne

from pipeline.jobs.aggregation import FINAL_COUNTED, started_pipeline
from pipeline.jobs.item_ids import item_ids
from pipeline.jobs.shapes import (
    DEFAULT_MAX_ATTEMPTS,
    SUMMARY_FIELDS,
    StoredItem,
)
from pipeline.states import ITEM_TRANSITIONS, Actor, Status, check
from pipeline.store import Store
from pipeline.store.by_id import MAX_IDS_PER_QUERY, chunks, find_by_ids
from pipeline.store.database import LEASED
from pipeline.store.document_collection import Document, utcnow
from pipeline.worker.handoffs import Handoff, HandoffRecords
from pipeline.worker.journal import Change, Journal
from providers.base import Completion

S = Status
Item = StoredItem

#: Item fields a worker needs (everything but ``_metadata``).
ITEM_PROJECTION = {"_metadata": 0}

#: What lease recovery needs of a leased item.
LEASE_FIELDS = {
    "_id": 1,
    "jobId": 1,
    "clientId": 1,
    "estCost": 1,
    "model": 1,
    "attempts": 1,
    "maxAttempts": 1,
    "leaseOwner": 1,
    "leaseExpiresAt": 1,
}

#: What a worker reads of its active jobs: the summary it is also sent
#: when a job arrives, plus what only polling needs.
ACTIVE_JOB_FIELDS = {
    **dict.fromkeys(SUMMARY_FIELDS, 1),
    "startedAt": 1,
    "journal": 1,
    "counts": 1,
}

_UNSET_LEASE = {"leaseOwner": "", "leaseExpiresAt": ""}

#: The jobs a worker polls (through the jobs' ``active`` index).
ACTIVE_JOBS = {"active": True}


@dataclass
class Outcome:
    """How one claimed item ended this attempt.

    Attributes:
        item: The claimed item (with its ``leaseOwner`` token).
        status: PROCESSED, FAILED, or PENDING for a retry.
        result: The result (PROCESSED).
        error: The error record (FAILED, or the last error of a retry).
        next_attempt_at: When a retry may run (PENDING).
        cost: USD spent by the call (0 for a cached result).
        input_tokens: Tokens billed for the input.
        output_tokens: Tokens billed for the output.
        attempts: The item's attempts to store with the outcome, or None
            to keep the claim's count (a provider batch line that never
            ran gives its attempt back).
        handoff: The fallback model the item moves to (PENDING), or
            None (:mod:`pipeline.worker.fallback`).
    """

    item: Item
    status: Status
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    next_attempt_at: datetime | None = None
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int | None = None
    handoff: Handoff | None = None


def answer_result(
    completion: Completion, cost: float, latency_ms: float
) -> dict[str, Any]:
    """The stored result of a provider's answer (live or batch)."""
    usage = completion.usage
    return {
        "text": completion.text,
        "finishReason": completion.finish_reason,
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "latencyMs": round(latency_ms, 1),
        "cost": cost,
        "cached": False,
        "model": completion.model,
        "responseId": completion.response_id,
    }


@dataclass
class WriteReport:
    """What a batch write changed."""

    written: list[Outcome] = field(default_factory=list)
    lost: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0


def _items(documents: list[Document]) -> list[Item]:
    """Item documents as read (with the reader's projection)."""
    return cast(list[Item], documents)


class ItemStore:
    """Reads, claims and finishes items for one worker (one *lane*)."""

    def __init__(self, store: Store, lane: str) -> None:
        self.prompt_versions = store.raw("prompt_versions")
        self.cache = store.raw("result_cache")
        self.lane = lane
        self.journal = Journal(
            store.raw("items"), store.raw("jobs"), lane, store.raw("clients")
        )
        self.handoffs = HandoffRecords(store.raw("handoffs"))

    # The journal writes through the same collections this store reads:
    # one pair, swapped together (tests swap in failing ones).

    @property
    def items(self) -> Any:
        """The items collection."""
        return self.journal.items

    @items.setter
    def items(self, collection: Any) -> None:
        self.journal.items = collection

    @property
    def jobs(self) -> Any:
        """The jobs collection."""
        return self.journal.jobs

    @jobs.setter
    def jobs(self, collection: Any) -> None:
        self.journal.jobs = collection

    # -- reading -----------------------------------------------------

    async def active_jobs(self) -> list[dict[str, Any]]:
        """Jobs that still have unfinished items."""
        return await self.jobs.find(ACTIVE_JOBS, ACTIVE_JOB_FIELDS).to_list()

    async def read_window(
        self, item_base: ObjectId, start: int, end: int
    ) -> list[Item]:
        """Every item of a job with ``start <= seq < end``, by their ids.

        Args:
            item_base: The job's ``itemBase``.
            start: First seq.
            end: Past the last seq (at most the job's item count).
        """
        ids = item_ids(item_base, start, end)
        return _items(await find_by_ids(self.items, ids, ITEM_PROJECTION))

    async def leased_count(self, job_id: ObjectId) -> int:
        """How many items of a job are leased (PROCESSING)."""
        # Through the lease index alone (see JobService.processing_counts).
        leased = self.items.find(
            {"leaseExpiresAt": {"$gte": LEASED}}, {"jobId": 1}
        )
        return sum([item["jobId"] == job_id async for item in leased])

    async def leased_items(
        self, models: Iterable[str], expired_before: datetime | None = None
    ) -> list[Item]:
        """Items of ``models`` currently leased (in flight somewhere).

        Only the fields lease recovery needs (:data:`LEASE_FIELDS`); read
        the rest with :meth:`items_by_id` for the items it requeues.

        Args:
            models: The models whose items are wanted.
            expired_before: Only leases that ran out before then (a few);
                None reads every lease (all items in flight: thousands
                while results queue behind a busy database).
        """
        # Through the lease index alone (see JobService.processing_counts).
        wanted = set(models)
        bounds: dict[str, datetime] = {"$gte": LEASED}
        if expired_before is not None:
            bounds["$lt"] = expired_before
        leased = self.items.find(
            {"leaseExpiresAt": bounds},
            {**LEASE_FIELDS, "status": 1, "model": 1},
        )
        return _items(
            [
                {key: item[key] for key in LEASE_FIELDS if key in item}
                async for item in leased
                if item.get("status") == S.PROCESSING
                and item["model"] in wanted
            ]
        )

    async def items_by_id(self, ids: list[ObjectId]) -> list[Item]:
        """Items (everything a worker needs of them) by their ids."""
        return _items(await find_by_ids(self.items, ids, ITEM_PROJECTION))

    async def system_prompts(
        self, keys: set[tuple[ObjectId, int]]
    ) -> dict[tuple[ObjectId, int], str]:
        """System prompts of prompt versions (immutable: cache them)."""
        found: dict[tuple[ObjectId, int], str] = {}
        by_prompt: dict[ObjectId, list[int]] = defaultdict(list)
        for prompt_id, version in keys:
            by_prompt[prompt_id].append(version)
        for prompt_id, versions in by_prompt.items():
            async for doc in self.prompt_versions.find(
                {"promptId": prompt_id, "version": {"$in": versions}},
                {"version": 1, "systemPrompt": 1},
            ):
                found[(prompt_id, doc["version"])] = doc["systemPrompt"]
        return found

    async def cached_results(self, keys: list[str]) -> dict[str, Any]:
        """Stored results by cache key."""
        found: dict[str, Any] = {}
        for chunk in chunks(sorted(set(keys)), MAX_IDS_PER_QUERY):
            async for doc in self.cache.find({"_id": {"$in": list(chunk)}}):
                found[doc["_id"]] = doc["result"]
        return found

    async def store_cached(self, entries: dict[str, dict[str, Any]]) -> None:
        """Keep results for later identical requests."""
        if not entries:
            return
        now = utcnow()
        await self.cache.bulk_write(
            [
                UpdateOne(
                    {"_id": key},
                    {"$setOnInsert": {"result": result, "createdAt": now}},
                    upsert=True,
                )
                for key, result in entries.items()
            ],
            ordered=False,
        )

    # -- claiming ----------------------------------------------------

    async def claim(
        self, items: list[Item], owner: str, lease_s: float
    ) -> list[Item]:
        """Atomically lease PENDING items to ``owner``.

        The attempt is counted here, at claim time, so an attempt that
        dies with its worker still counts. No job document changes: a
        leased item counts as PROCESSING by being leased.

        Args:
            items: Candidates (read earlier; they may have changed).
            owner: A token unique to this claim.
            lease_s: Lease duration in seconds.

        Returns:
            The items actually claimed, updated (attempts, lease); each
            item once, even if the candidates held it twice.
        """
        # Two copies of one item in a claim would both be sent and both
        # counted: keep the first.
        unique: dict[ObjectId, Item] = {}
        for item in items:
            unique.setdefault(item["_id"], item)
        items = list(unique.values())
        if not items:
            return []
        check(ITEM_TRANSITIONS, "item", Actor.SYSTEM, S.PENDING, S.PROCESSING)
        now = utcnow()
        expires = now + timedelta(seconds=lease_s)
        ids = [item["_id"] for item in items]
        result = await self.items.update_many(
            {"_id": {"$in": ids}, "status": S.PENDING},
            {
                "$set": {
                    "status": S.PROCESSING,
                    "leaseOwner": owner,
                    "leaseExpiresAt": expires,
                    "startedAt": now,
                },
                "$inc": {"attempts": 1},
                "$unset": {"nextAttemptAt": ""},
            },
        )
        if result.modified_count == len(ids):
            claimed = set(ids)
        else:
            claimed = {
                doc["_id"]
                async for doc in self.items.find(
                    {"_id": {"$in": ids}, "leaseOwner": owner}, {"_id": 1}
                )
            }
        taken = []
        for item in items:
            if item["_id"] in claimed:
                item.update(
                    {
                        "status": S.PROCESSING,
                        "leaseOwner": owner,
                        "leaseExpiresAt": expires,
                        "startedAt": now,
                        "attempts": item.get("attempts", 0) + 1,
                    }
                )
                taken.append(item)
        return taken

    async def claimed_by(self, ids: list[ObjectId], owner: str) -> list[Item]:
        """The items among ``ids`` leased to ``owner``.

        Asked after a claim whose answer was lost.
        """
        return _items(
            await find_by_ids(
                self.items, ids, ITEM_PROJECTION, leaseOwner=owner
            )
        )

    async def renew_leases(self, items: list[Item], lease_s: float) -> None:
        """Extend the leases of items this worker still holds.

        Addressed by ``_id`` and guarded by each item's lease token, so a
        lease already taken by someone else is left alone.

        Args:
            items: Claimed items (with their ``leaseOwner`` token); their
                ``leaseExpiresAt`` is updated.
            lease_s: The new lease duration in seconds, from now.
        """
        expires = utcnow() + timedelta(seconds=lease_s)
        for chunk in chunks(items, MAX_IDS_PER_QUERY):
            await self.items.update_many(
                {
                    "_id": {"$in": [i["_id"] for i in chunk]},
                    "status": S.PROCESSING,
                    "leaseOwner": {
                        "$in": sorted({i["leaseOwner"] for i in chunk})
                    },
                },
                {"$set": {"leaseExpiresAt": expires}},
            )
            for item in chunk:
                item["leaseExpiresAt"] = expires

    async def mark_started(self, job_ids: Iterable[ObjectId]) -> None:
        """Record that jobs have started (their first claim)."""
        ops = [UpdateOne({"_id": j}, started_pipeline()) for j in job_ids]
        if ops:
            await self.jobs.bulk_write(ops, ordered=False)

    # -- finishing ---------------------------------------------------

    async def finish(
        self, outcomes: list[Outcome], batch: str | None = None
    ) -> WriteReport:
        """Write a batch of outcomes and their jobs' counters.

        Each item write is guarded by the item's lease token: an item
        whose lease expired and was taken by another worker is not
        written (it is reported as ``lost``), so no item completes twice.

        Args:
            outcomes: What to write.
            batch: The batch id of a caller that tries a failed write
                again, with the same id and outcomes, until it succeeds
                (it is idempotent). Its batch is never settled here
                meanwhile; without one, a failed write is settled before
                the next.
        """
        began = time.monotonic()
        changes = [self._finish_change(o) for o in outcomes]
        # Into the receivers' inboxes before the items move: an item
        # written first and its entry lost would be stranded.
        await self.handoffs.send(
            (o.handoff.inbox, o.item)
            for o in outcomes
            if o.handoff is not None and o.handoff.inbox is not None
        )
        written = await self.journal.write(
            changes, batch, held=batch is not None
        )
        done = {id(c.item) for c in written}
        return WriteReport(
            written=[o for o in outcomes if id(o.item) in done],
            lost=[o for o in outcomes if id(o.item) not in done],
            seconds=time.monotonic() - began,
        )

    def _finish_change(self, outcome: Outcome) -> Change:
        item = outcome.item
        fields: dict[str, Any] = {
            "status": outcome.status,
            "claimToken": item["leaseOwner"],
            "error": outcome.error,
        }
        if outcome.status == S.PENDING:
            fields["nextAttemptAt"] = outcome.next_attempt_at
        else:
            fields["finishedAt"] = utcnow()
        answered_by = None
        if outcome.result is not None:
            # The catalog model that answered (result.model is what the
            # provider reported).
            answered_by = item["model"]
            fields["result"] = {**outcome.result, "servedBy": answered_by}
        if outcome.attempts is not None:
            fields["attempts"] = outcome.attempts
        if outcome.handoff is not None:
            fields["model"] = outcome.handoff.model
            fields["requestedModel"] = outcome.handoff.requested
            fields["fallbackFrom"] = list(outcome.handoff.tried)
        return Change(
            item=item,
            target=outcome.status,
            filter={
                "_id": item["_id"],
                "status": S.PROCESSING,
                "leaseOwner": item["leaseOwner"],
            },
            update={"$set": fields, "$unset": _UNSET_LEASE},
            usage=(outcome.input_tokens, outcome.output_tokens, outcome.cost),
            answered_by=answered_by,
        )

    async def release_leases(
        self, items: list[Item], *, reason: str, attempted: bool = True
    ) -> tuple[list[Item], list[Item]]:
        """Take back leases of items whose worker is gone (or retires).

        Items with attempts left go back to PENDING; the others fail
        with ``reason`` kept as their error.

        Args:
            items: Leased items (with their ``leaseOwner`` token).
            reason: Why, kept as the error of the items it fails.
            attempted: Whether their provider call may have been made.
                A worker that retires gives back items it never sent:
                their attempt (counted at claim time) is given back too,
                and none fails.

        Returns:
            (items now PENDING, items now FAILED).
        """
        now = utcnow()
        changes = []
        for item in items:
            final = attempted and item.get("attempts", 0) >= item.get(
                "maxAttempts", DEFAULT_MAX_ATTEMPTS
            )
            fields: dict[str, Any] = {
                "status": S.FAILED if final else S.PENDING,
                "finishedAt" if final else "nextAttemptAt": now,
            }
            update: dict[str, Any] = {"$set": fields, "$unset": _UNSET_LEASE}
            if attempted:
                fields["error"] = {
                    "type": "lease_expired",
                    "message": reason,
                    "retryable": not final,
                    "statusCode": None,
                }
            else:
                update["$inc"] = {"attempts": -1}
            changes.append(
                Change(
                    item=item,
                    target=S.FAILED if final else S.PENDING,
                    filter={
                        "_id": item["_id"],
                        "status": S.PROCESSING,
                        "leaseOwner": item["leaseOwner"],
                    },
                    update=update,
                )
            )
        written = await self.journal.write(changes)
        return (
            [c.item for c in written if c.target == S.PENDING],
            [c.item for c in written if c.target == S.FAILED],
        )

    async def move(
        self,
        items: list[Item],
        source: Status,
        target: Status,
        extra: StoredItem | None = None,
        actor: Actor = Actor.SYSTEM,
    ) -> list[Item]:
        """Move items from ``source`` to ``target`` (cancel, requeue).

        Args:
            items: The items to move.
            source: The status they must be in.
            target: The status they move to.
            extra: Other fields to set.
            actor: On whose behalf (a requeue is an admin's).

        Returns:
            The items that were in ``source`` and moved.
        """
        fields: dict[str, Any] = {"status": target, **(extra or {})}
        if target in FINAL_COUNTED:
            fields["finishedAt"] = utcnow()
        changes = [
            Change(
                item=item,
                target=target,
                source=source,
                filter={"_id": item["_id"], "status": source},
                update={"$set": fields},
                actor=actor,
            )
            for item in items
        ]
        moved: list[Item] = []
        for chunk in chunks(changes, MAX_IDS_PER_QUERY):
            written = await self.journal.write(list(chunk))
            moved += [c.item for c in written]
        return moved

    async def tidy_journal(self) -> None:
        """Settle this lane's failed writes that nobody retries, now.

        Otherwise they wait for the lane's next write.
        """
        await self.journal.settle_uncertain()

    async def recover_journal(
        self, job: dict[str, Any], lanes: Iterable[str]
    ) -> int:
        """Settle journal entries that dead writers left in a job.

        Returns:
            How many entries were settled.
        """
        return await self.journal.recover(job, lanes)
