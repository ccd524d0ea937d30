"""The worker's database operations on items and their jobs' counters.

Shaped for the local SecantusDB as much as for MongoDB (see
``shared/LOCAL-DB.md``): items are read a window at a time by their
computed ids (:mod:`pipeline.jobs.item_ids`) and filtered here; every
write is batched and addressed by ``_id``.

Counters without transactions. Only changes into or out of a final
status touch a job (:mod:`pipeline.jobs.aggregation`). Such a batch is
written in three steps: one update per job records a journal entry
(batch id, writer, item ids and moves); then the items are written, each
stamped with the batch id and guarded by its lease; then one update per
job applies the counts and usage of the items that were written and
removes the entry, guarded by the entry. So a job never counts an item
that is not written yet: its counts, and the items under a lease, add
up to its items at every moment. If the writer dies between the steps,
its successor settles the entry from what the items show (the stamped
ones are counted). No multi-document transaction is needed, so writers
never conflict on a busy job document, and any MongoDB (standalone
included) will do.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne

from pipeline.jobs.aggregation import (
    FINAL_COUNTED,
    JobDelta,
    started_pipeline,
    update_pipeline,
)
from pipeline.jobs.documents import SUMMARY_FIELDS
from pipeline.jobs.item_ids import item_ids
from pipeline.logging import get_logger
from pipeline.states import Status
from pipeline.store import Store
from pipeline.store.by_id import MAX_IDS_PER_QUERY, chunks, find_by_ids
from pipeline.store.database import LEASED
from pipeline.store.documents import utcnow

S = Status
Item = dict[str, Any]
log = get_logger(__name__)

#: Item fields a worker needs (everything but ``_metadata``).
ITEM_PROJECTION = {"_metadata": 0}

#: What lease recovery needs of a leased item.
LEASE_FIELDS = {
    "_id": 1,
    "jobId": 1,
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
    seconds: float = 0.0


@dataclass
class _Change:
    """One item write of a journaled batch."""

    item: Item
    target: Status
    filter: dict[str, Any]
    update: dict[str, Any]
    source: Status = S.PROCESSING
    usage: tuple[int, int, float] = (0, 0, 0.0)

    @property
    def counted(self) -> bool:
        return self.target in FINAL_COUNTED or self.source in FINAL_COUNTED


class ItemStore:
    """Reads, claims and finishes items for one worker (one *lane*)."""

    def __init__(self, store: Store, lane: str) -> None:
        self.items = store.raw("items")
        self.jobs = store.raw("jobs")
        self.prompt_versions = store.raw("prompt_versions")
        self.cache = store.raw("result_cache")
        self.lane = lane
        # Batches whose write failed after their journal entries may
        # have been recorded: settled (like a dead writer's) before the
        # next write, unless their writer holds them to try again.
        self._uncertain: dict[str, dict[ObjectId, list[list[Any]]]] = {}
        # Uncertain batches their writer will try again (see finish):
        # settling one under its writer would race with the retry.
        self._held: set[str] = set()
        # Batches whose entries are known to be recorded: a retry must
        # not record them again (the counts may be applied and the
        # entries gone, and would be applied twice).
        self._journaled: set[str] = set()

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
        return await find_by_ids(self.items, ids, ITEM_PROJECTION)

    async def leased_count(self, job_id: ObjectId) -> int:
        """How many items of a job are leased (PROCESSING)."""
        return await self.items.count_documents(
            {"leaseExpiresAt": {"$gte": LEASED}, "jobId": job_id}
        )

    async def leased_items(self, models: Iterable[str]) -> list[Item]:
        """Items of ``models`` currently leased (in flight somewhere).

        Only the fields lease recovery needs (:data:`LEASE_FIELDS`); read
        the rest with :meth:`items_by_id` for the items it requeues.
        """
        return await self.items.find(
            {
                "leaseExpiresAt": {"$gte": LEASED},
                "status": S.PROCESSING,
                "model": {"$in": sorted(models)},
            },
            LEASE_FIELDS,
        ).to_list()

    async def items_by_id(self, ids: list[ObjectId]) -> list[Item]:
        """Items (everything a worker needs of them) by their ids."""
        return await find_by_ids(self.items, ids, ITEM_PROJECTION)

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
                    status=S.PROCESSING,
                    leaseOwner=owner,
                    leaseExpiresAt=expires,
                    startedAt=now,
                    attempts=item.get("attempts", 0) + 1,
                )
                taken.append(item)
        return taken

    async def claimed_by(self, ids: list[ObjectId], owner: str) -> list[Item]:
        """The items among ``ids`` leased to ``owner``.

        Asked after a claim whose answer was lost.
        """
        return await find_by_ids(
            self.items, ids, ITEM_PROJECTION, leaseOwner=owner
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
        written = await self._write(changes, batch, held=batch is not None)
        done = {id(c.item) for c in written}
        return WriteReport(
            written=[o for o in outcomes if id(o.item) in done],
            lost=[o for o in outcomes if id(o.item) not in done],
            seconds=time.monotonic() - began,
        )

    def _finish_change(self, outcome: Outcome) -> _Change:
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
        if outcome.result is not None:
            fields["result"] = outcome.result
        return _Change(
            item=item,
            target=outcome.status,
            filter={
                "_id": item["_id"],
                "status": S.PROCESSING,
                "leaseOwner": item["leaseOwner"],
            },
            update={"$set": fields, "$unset": _UNSET_LEASE},
            usage=(outcome.input_tokens, outcome.output_tokens, outcome.cost),
        )

    async def release_leases(
        self, items: list[Item], *, reason: str
    ) -> tuple[list[Item], list[Item]]:
        """Take back leases of items whose worker is gone.

        Items with attempts left go back to PENDING; the others fail
        with ``reason`` kept as their error.

        Returns:
            (items now PENDING, items now FAILED).
        """
        now = utcnow()
        changes = []
        for item in items:
            final = item.get("attempts", 0) >= item.get("maxAttempts", 1)
            fields: dict[str, Any] = {
                "status": S.FAILED if final else S.PENDING,
                "error": {
                    "type": "lease_expired",
                    "message": reason,
                    "retryable": not final,
                    "statusCode": None,
                },
                "finishedAt" if final else "nextAttemptAt": now,
            }
            changes.append(
                _Change(
                    item=item,
                    target=S.FAILED if final else S.PENDING,
                    filter={
                        "_id": item["_id"],
                        "status": S.PROCESSING,
                        "leaseOwner": item["leaseOwner"],
                    },
                    update={"$set": fields, "$unset": _UNSET_LEASE},
                )
            )
        written = await self._write(changes)
        return (
            [c.item for c in written if c.target == S.PENDING],
            [c.item for c in written if c.target == S.FAILED],
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
        fields: dict[str, Any] = {"status": target, **(extra or {})}
        if target in FINAL_COUNTED:
            fields["finishedAt"] = utcnow()
        changes = [
            _Change(
                item=item,
                target=target,
                source=source,
                filter={"_id": item["_id"], "status": source},
                update={"$set": fields},
            )
            for item in items
        ]
        moved: list[Item] = []
        for chunk in chunks(changes, MAX_IDS_PER_QUERY):
            moved += [c.item for c in await self._write(list(chunk))]
        return moved

    # -- the journaled write -------------------------------------------

    async def _write(
        self,
        changes: list[_Change],
        batch: str | None = None,
        *,
        held: bool = False,
    ) -> list[_Change]:
        """Apply item changes and then their counters (module docstring).

        Safe to repeat with the same ``batch``: each entry is recorded
        once, items written by an earlier try carry its stamp, and the
        counts are applied once, with the removal of the entry. A try
        that fails leaves the batch *uncertain*; unless ``held`` (its
        caller tries it again), it is settled before the next write.

        Returns:
            The changes whose item write took effect.
        """
        if not changes:
            return []
        batch = batch or str(ObjectId())
        await self._settle_uncertain()
        counted = [c for c in changes if c.counted]
        moves = self._journal_moves(counted)
        try:
            if moves and batch not in self._journaled:
                await self._record(moves, batch)
                self._journaled.add(batch)
            ops = []
            for change in changes:
                update = {**change.update}
                update["$set"] = {**update["$set"], "batch": batch}
                ops.append(UpdateOne(change.filter, update))
            result = await self.items.bulk_write(ops, ordered=False)
            if result.modified_count == len(ops):
                written = changes
            else:
                written = await self._stamped(changes, batch)
            if moves:
                await self._count(moves, written, batch)
        except Exception:
            if moves:
                self._uncertain[batch] = moves
                if held:
                    self._held.add(batch)
            raise
        self._forget(batch)
        return written

    def _forget(self, batch: str) -> None:
        """A batch is written or settled: nothing more to do for it."""
        self._uncertain.pop(batch, None)
        self._held.discard(batch)
        self._journaled.discard(batch)

    async def _record(
        self, moves: dict[ObjectId, list[list[Any]]], batch: str
    ) -> None:
        """Record the batch's journal entry in each of its jobs."""
        await self.jobs.bulk_write(
            [
                UpdateOne(
                    # Once per batch, however often the write is tried.
                    {"_id": job_id, "journal.b": {"$ne": batch}},
                    update_pipeline(
                        JobDelta(),
                        journal_add={
                            "b": batch,
                            "lane": self.lane,
                            "items": job_moves,
                        },
                    ),
                )
                for job_id, job_moves in moves.items()
            ],
            ordered=False,
        )

    async def _count(
        self,
        moves: dict[ObjectId, list[list[Any]]],
        written: list[_Change],
        batch: str,
    ) -> None:
        """Count the written items of a batch and remove its entries."""
        done = {c.item["_id"] for c in written}
        await self.jobs.bulk_write(
            [
                UpdateOne(
                    # Only while the entry is there: once per batch.
                    {"_id": job_id, "journal.b": batch},
                    update_pipeline(
                        _delta(m for m in job_moves if m[0] in done),
                        journal_drop=[batch],
                    ),
                )
                for job_id, job_moves in moves.items()
            ],
            ordered=False,
        )

    @staticmethod
    def _journal_moves(
        changes: list[_Change],
    ) -> dict[ObjectId, list[list[Any]]]:
        """Per job, what a journal entry records of each change."""
        by_job: dict[ObjectId, list[list[Any]]] = defaultdict(list)
        for change in changes:
            by_job[change.item["jobId"]].append(
                [
                    change.item["_id"],
                    change.source.value,
                    change.target.value,
                    *change.usage,
                ]
            )
        return dict(by_job)

    async def _stamped(
        self, changes: list[_Change], batch: str
    ) -> list[_Change]:
        """Which changes took effect (after a partial batch)."""
        stamped: set[ObjectId] = set()
        for chunk in chunks(changes, MAX_IDS_PER_QUERY):
            async for doc in self.items.find(
                {"_id": {"$in": [c.item["_id"] for c in chunk]}},
                {"batch": 1},
            ):
                if doc.get("batch") == batch:
                    stamped.add(doc["_id"])
        return [c for c in changes if c.item["_id"] in stamped]

    async def _settle_uncertain(self) -> None:
        """Settle this lane's uncertain batches that nobody retries."""
        for batch in [b for b in self._uncertain if b not in self._held]:
            moves_by_job = self._uncertain.get(batch)
            if moves_by_job is None:
                continue  # settled meanwhile by a concurrent write
            for job_id, moves in moves_by_job.items():
                await self._settle_entry(
                    job_id, {"b": batch, "lane": self.lane, "items": moves}
                )
            self._forget(batch)

    async def tidy_journal(self) -> None:
        """Settle this lane's failed writes that nobody retries, now.

        Otherwise they wait for the lane's next write.
        """
        await self._settle_uncertain()

    async def recover_journal(
        self, job: dict[str, Any], lanes: Iterable[str]
    ) -> int:
        """Settle journal entries that dead writers left in a job.

        Returns:
            How many entries were settled.
        """
        dead = set(lanes)
        entries = [
            e for e in job.get("journal") or [] if e.get("lane") in dead
        ]
        for entry in entries:
            await self._settle_entry(job["_id"], entry)
        return len(entries)

    async def _settle_entry(
        self, job_id: ObjectId, entry: dict[str, Any]
    ) -> None:
        """Count what an entry's items show written; remove the entry.

        The items carry the batch id of the write that changed them, so
        the counts and usage of the items written are applied and the
        entry is removed, in one update guarded by the entry.
        """
        moves = entry.get("items") or []
        stamped: set[ObjectId] = set()
        for chunk in chunks([m[0] for m in moves], MAX_IDS_PER_QUERY):
            async for doc in self.items.find(
                {"_id": {"$in": list(chunk)}}, {"batch": 1}
            ):
                if doc.get("batch") == entry["b"]:
                    stamped.add(doc["_id"])
        await self.jobs.update_one(
            {"_id": job_id, "journal.b": entry["b"]},
            update_pipeline(
                _delta(m for m in moves if m[0] in stamped),
                journal_drop=[entry["b"]],
            ),
        )
        log.warning(
            "journal_settled",
            job_id=str(job_id),
            batch=entry["b"],
            lane=entry.get("lane"),
            items_written=len(stamped),
            items_not_written=len(moves) - len(stamped),
        )


def _delta(moves: Iterable[list[Any]]) -> JobDelta:
    """The counts and usage of journal moves."""
    delta = JobDelta()
    for _, source, target, tokens_in, tokens_out, cost in moves:
        delta.move(Status(source), Status(target))
        delta.add_usage(tokens_in, tokens_out, cost)
    return delta
