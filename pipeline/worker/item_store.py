"""The worker's database operations on items and their jobs' counters.

Shaped for the local SecantusDB as much as for MongoDB (see
``shared/LOCAL-DB.md``): items are read a bounded window at a time on the
``(jobId, seq)`` index and filtered here; every write is batched and
addressed by ``_id``; job counters change in one pipeline update per job
per batch, in the same transaction as the items they count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from pipeline.jobs.aggregation import JobDelta, update_pipeline
from pipeline.states import Status
from pipeline.store import Store
from pipeline.store.documents import utcnow
from pipeline.store.transactions import Atomic

S = Status
Item = dict[str, Any]

#: Item fields a worker needs (everything but ``_metadata``).
ITEM_PROJECTION = {"_metadata": 0}

#: Largest ``$in`` list per query: SecantusDB slows down quadratically
#: beyond about a hundred ids.
MAX_IDS_PER_QUERY = 100


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
    """

    item: Item
    status: Status
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    next_attempt_at: datetime | None = None
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class WriteReport:
    """What a batch write changed."""

    written: list[Outcome] = field(default_factory=list)
    lost: list[Outcome] = field(default_factory=list)


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class ItemStore:
    """Reads, claims and finishes items for one worker."""

    def __init__(self, store: Store, atomic: Atomic) -> None:
        self.items = store.raw("items")
        self.jobs = store.raw("jobs")
        self.prompt_versions = store.raw("prompt_versions")
        self.cache = store.raw("result_cache")
        self._atomic = atomic

    # -- reading -----------------------------------------------------

    async def active_jobs(self) -> list[dict[str, Any]]:
        """Jobs that still have pending or running items."""
        return await self.jobs.find(
            {"active": True},
            {
                "_id": 1,
                "clientId": 1,
                "priority": 1,
                "totalItems": 1,
                "maxAttempts": 1,
                "cache": 1,
                "providers": 1,
                "status": 1,
                "requeues": 1,
                "_metadata.isDeleted": 1,
            },
        ).to_list()

    async def read_window(
        self, job_id: ObjectId, start: int, end: int
    ) -> list[Item]:
        """Every item of a job with ``start <= seq < end``.

        The filter is the bounded ``(jobId, seq)`` range alone: adding
        any other field makes SecantusDB scan the collection.
        """
        return await self.items.find(
            {"jobId": job_id, "seq": {"$gte": start, "$lt": end}},
            ITEM_PROJECTION,
        ).to_list()

    async def leased_items(self) -> list[Item]:
        """Every item currently leased (in flight somewhere)."""
        return await self.items.find(
            {"status": S.PROCESSING, "leaseExpiresAt": {"$exists": True}},
            ITEM_PROJECTION,
        ).to_list()

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
        for chunk in _chunks(sorted(set(keys)), MAX_IDS_PER_QUERY):
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
        dies with its worker still counts.

        Args:
            items: Candidates (read earlier; they may have changed).
            owner: A token unique to this claim.
            lease_s: Lease duration in seconds.

        Returns:
            The items actually claimed, updated (attempts, lease).
        """
        if not items:
            return []
        now = utcnow()
        expires = now + timedelta(seconds=lease_s)
        ids = [item["_id"] for item in items]

        async def writes(session: AsyncClientSession | None) -> set[ObjectId]:
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
                session=session,
            )
            if result.modified_count == len(ids):
                claimed = set(ids)
            else:
                claimed = {
                    doc["_id"]
                    async for doc in self.items.find(
                        {"_id": {"$in": ids}, "leaseOwner": owner},
                        {"_id": 1},
                        session=session,
                    )
                }
            deltas: dict[ObjectId, JobDelta] = defaultdict(JobDelta)
            for item in items:
                if item["_id"] in claimed:
                    delta = deltas[item["jobId"]]
                    delta.move(S.PENDING, S.PROCESSING)
                    delta.started = True
            await self._apply(deltas, session)
            return claimed

        claimed = await self._atomic.run(writes)
        taken = []
        for item in items:
            if item["_id"] in claimed:
                item.update(
                    status=S.PROCESSING,
                    leaseOwner=owner,
                    leaseExpiresAt=expires,
                    startedAt=now,
                    attempts=item.get("attempts", 0) + 1,
                )
                taken.append(item)
        return taken

    # -- finishing ---------------------------------------------------

    async def finish(self, outcomes: list[Outcome]) -> WriteReport:
        """Write a batch of outcomes and their jobs' counters at once.

        Each write is guarded by the item's lease token: an item whose
        lease expired and was taken by another worker is not written
        (it is reported as ``lost``), so no item completes twice.
        """
        report = WriteReport()
        if not outcomes:
            return report

        async def writes(session: AsyncClientSession | None) -> WriteReport:
            ops = [self._finish_op(o) for o in outcomes]
            result = await self.items.bulk_write(
                ops, ordered=False, session=session
            )
            if result.modified_count == len(ops):
                written = list(outcomes)
            else:
                written = await self._verify(outcomes, session)
            deltas: dict[ObjectId, JobDelta] = defaultdict(JobDelta)
            for outcome in written:
                delta = deltas[outcome.item["jobId"]]
                delta.move(S.PROCESSING, outcome.status)
                delta.add_usage(
                    outcome.input_tokens, outcome.output_tokens, outcome.cost
                )
            await self._apply(deltas, session)
            done = {id(o) for o in written}
            return WriteReport(
                written=written,
                lost=[o for o in outcomes if id(o) not in done],
            )

        return await self._atomic.run(writes)

    def _finish_op(self, outcome: Outcome) -> UpdateOne:
        item = outcome.item
        now = utcnow()
        fields: dict[str, Any] = {
            "status": outcome.status,
            "claimToken": item["leaseOwner"],
            "error": outcome.error,
        }
        if outcome.status == S.PENDING:
            fields["nextAttemptAt"] = outcome.next_attempt_at
        else:
            fields["finishedAt"] = now
        if outcome.result is not None:
            fields["result"] = outcome.result
        return UpdateOne(
            {
                "_id": item["_id"],
                "status": S.PROCESSING,
                "leaseOwner": item["leaseOwner"],
            },
            {
                "$set": fields,
                "$unset": {"leaseOwner": "", "leaseExpiresAt": ""},
            },
        )

    async def _verify(
        self, outcomes: list[Outcome], session: AsyncClientSession | None
    ) -> list[Outcome]:
        """Which outcomes were written (after a partial batch)."""
        tokens: dict[ObjectId, str] = {}
        for chunk in _chunks(outcomes, MAX_IDS_PER_QUERY):
            async for doc in self.items.find(
                {"_id": {"$in": [o.item["_id"] for o in chunk]}},
                {"claimToken": 1},
                session=session,
            ):
                tokens[doc["_id"]] = doc.get("claimToken", "")
        return [
            o
            for o in outcomes
            if tokens.get(o.item["_id"]) == o.item["leaseOwner"]
        ]

    # -- recovery and bulk moves ---------------------------------------

    async def release_leases(
        self, items: list[Item], *, reason: str
    ) -> tuple[list[Item], list[Item]]:
        """Take back leases of items whose worker is gone.

        Items with attempts left go back to PENDING; the others fail
        with ``reason`` kept as their error.

        Returns:
            (items now PENDING, items now FAILED).
        """
        requeued, failed = [], []
        for item in items:
            limit = item.get("maxAttempts", 1)
            target = failed if item.get("attempts", 0) >= limit else requeued
            target.append(item)

        async def writes(session: AsyncClientSession | None) -> set[ObjectId]:
            now = utcnow()
            ops = []
            for item in requeued + failed:
                final = item in failed
                fields: dict[str, Any] = {
                    "status": S.FAILED if final else S.PENDING,
                    "error": {
                        "type": "lease_expired",
                        "message": reason,
                        "retryable": not final,
                        "statusCode": None,
                    },
                }
                fields["finishedAt" if final else "nextAttemptAt"] = now
                ops.append(
                    UpdateOne(
                        {
                            "_id": item["_id"],
                            "status": S.PROCESSING,
                            "leaseOwner": item["leaseOwner"],
                        },
                        {
                            "$set": fields,
                            "$unset": {"leaseOwner": "", "leaseExpiresAt": ""},
                        },
                    )
                )
            result = await self.items.bulk_write(
                ops, ordered=False, session=session
            )
            moved = {i["_id"] for i in requeued + failed}
            if result.modified_count != len(ops):
                moved = {
                    doc["_id"]
                    for chunk in _chunks(list(moved), MAX_IDS_PER_QUERY)
                    for doc in await self.items.find(
                        {
                            "_id": {"$in": list(chunk)},
                            "status": {"$ne": S.PROCESSING},
                            "error.type": "lease_expired",
                        },
                        {"_id": 1},
                        session=session,
                    ).to_list()
                }
            deltas: dict[ObjectId, JobDelta] = defaultdict(JobDelta)
            for item in requeued + failed:
                if item["_id"] in moved:
                    deltas[item["jobId"]].move(
                        S.PROCESSING,
                        S.FAILED if item in failed else S.PENDING,
                    )
            await self._apply(deltas, session)
            return moved

        if not items:
            return [], []
        moved = await self._atomic.run(writes)
        return (
            [i for i in requeued if i["_id"] in moved],
            [i for i in failed if i["_id"] in moved],
        )

    async def move(
        self,
        items: list[Item],
        source: Status,
        target: Status,
        extra: dict[str, Any] | None = None,
    ) -> list[Item]:
        """Move items from ``source`` to ``target`` (cancel, requeue).

        Returns:
            The items that were in ``source`` and moved.
        """
        moved: list[Item] = []
        for chunk in _chunks(items, MAX_IDS_PER_QUERY):
            moved += await self._move_chunk(list(chunk), source, target, extra)
        return moved

    async def _move_chunk(
        self,
        items: list[Item],
        source: Status,
        target: Status,
        extra: dict[str, Any] | None,
    ) -> list[Item]:
        ids = [i["_id"] for i in items]
        marker = ObjectId()

        async def writes(session: AsyncClientSession | None) -> set[ObjectId]:
            fields = {"status": target, "moveToken": marker, **(extra or {})}
            if target in (S.CANCELED, S.FAILED):
                fields["finishedAt"] = utcnow()
            result = await self.items.update_many(
                {"_id": {"$in": ids}, "status": source},
                {"$set": fields},
                session=session,
            )
            if result.modified_count == len(ids):
                moved = set(ids)
            else:
                moved = {
                    doc["_id"]
                    async for doc in self.items.find(
                        {"_id": {"$in": ids}, "moveToken": marker},
                        {"_id": 1},
                        session=session,
                    )
                }
            deltas: dict[ObjectId, JobDelta] = defaultdict(JobDelta)
            for item in items:
                if item["_id"] in moved:
                    deltas[item["jobId"]].move(source, target)
            await self._apply(deltas, session)
            return moved

        moved = await self._atomic.run(writes)
        return [i for i in items if i["_id"] in moved]

    async def _apply(
        self,
        deltas: dict[ObjectId, JobDelta],
        session: AsyncClientSession | None,
    ) -> None:
        ops = [
            UpdateOne({"_id": job_id}, update_pipeline(delta))
            for job_id, delta in deltas.items()
            if not delta.is_empty() or delta.started
        ]
        if ops:
            await self.jobs.bulk_write(ops, ordered=False, session=session)
