"""The journaled write: item changes and their jobs' counters, no transaction.

Only changes into or out of a final status touch a job
(:mod:`pipeline.jobs.aggregation`). A batch of such changes is written in
three steps: one update per job records a journal entry (batch id,
writer's lane, item ids and moves); then the items are written, each
stamped with the batch id and guarded by its filter (a lease, say); then
one update per job applies the counts and usage of the items that were
written and removes the entry, guarded by the entry. So a job never
counts an item that is not written yet: its counts, and the items under
a lease, add up to its items at every moment. If the writer dies between
the steps, its successor settles the entry from what the items show (the
stamped ones are counted). No multi-document transaction is needed, so
writers never conflict on a busy job document, and any MongoDB
(standalone included) will do.

The counting step also moves the owning clients' usage counters
(:mod:`pipeline.usage`: pending items, reserved and spent USD), just
before the jobs' counts; each client change is keyed by batch and job,
so a repeated or settled step applies it once.

Every change is checked against the item table of
:mod:`pipeline.states` before anything is written, and each item write's
filter requires the change's source status, so the database applies a
change only from where the table allows it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne

from pipeline.errors import InvalidTransition
from pipeline.jobs.aggregation import FINAL_COUNTED, JobDelta, update_pipeline
from pipeline.jobs.shapes import StoredItem
from pipeline.logging import get_logger
from pipeline.states import ITEM_TRANSITIONS, Actor, Status, allowed
from pipeline.store.by_id import MAX_IDS_PER_QUERY, chunks
from pipeline.usage import ClientUsage, UsageDelta

log = get_logger(__name__)

#: What an entry records of one item: ``[_id, source, target,
#: input tokens, output tokens, cost, estimated cost, answered by]`` (the
#: estimate is what the item holds reserved of its client's budget;
#: *answered by* is the catalog model of a PROCESSED item's result, or
#: None; entries written before it have seven fields).
Move = list[Any]


@dataclass
class Change:
    """One item write of a journaled batch.

    Attributes:
        item: The item (its ``_id`` and ``jobId`` address the writes).
        target: The status it moves to.
        filter: The guard of its write (status, lease token...).
        update: The update to apply (the batch stamp is added).
        source: The status it moves from (its ``filter`` requires it).
        usage: Input tokens, output tokens and USD the move adds.
        actor: On whose behalf (a requeue is an admin's).
        answered_by: The catalog model that answered (a move to
            PROCESSED), counted in the job's ``answersByModel``.
    """

    item: StoredItem
    target: Status
    filter: dict[str, Any]
    update: dict[str, Any]
    source: Status = Status.PROCESSING
    usage: tuple[int, int, float] = (0, 0, 0.0)
    actor: Actor = Actor.SYSTEM
    answered_by: str | None = None

    @property
    def counted(self) -> bool:
        """Whether the change moves a job's stored counts."""
        return self.target in FINAL_COUNTED or self.source in FINAL_COUNTED


def journal_moves(changes: Iterable[Change]) -> dict[ObjectId, list[Move]]:
    """Per job, what a journal entry records of each counted change."""
    by_job: dict[ObjectId, list[Move]] = defaultdict(list)
    for change in changes:
        if change.counted:
            by_job[change.item["jobId"]].append(
                [
                    change.item["_id"],
                    change.source.value,
                    change.target.value,
                    *change.usage,
                    # None: stored before submissions reserved anything.
                    change.item.get("estCost"),
                    change.answered_by,
                ]
            )
    return dict(by_job)


def job_clients(changes: Iterable[Change]) -> dict[ObjectId, ObjectId]:
    """The client of each job the changes touch (when items name it)."""
    return {
        c.item["jobId"]: c.item["clientId"]
        for c in changes
        if c.item.get("clientId") is not None
    }


def moves_usage(moves: Iterable[Move]) -> UsageDelta:
    """What journal moves change of their client's usage counters.

    Reaching a final status releases an item's pending place and its
    reserved estimate and adds its cost; leaving one (a requeue) takes
    them back. An item without an estimate was stored before submissions
    reserved anything: it has no place to give back.
    """
    delta = UsageDelta()
    for move in moves:
        source, target, cost = Status(move[1]), Status(move[2]), move[5]
        estimate = move[6] if len(move) > 6 else None
        if estimate is not None:
            sign = (target in FINAL_COUNTED) - (source in FINAL_COUNTED)
            delta.pending_items -= sign
            delta.reserved_cost -= sign * estimate
        delta.spent_cost += cost
    return delta


def moves_delta(moves: Iterable[Move]) -> JobDelta:
    """The counts, usage and answers by model of journal moves."""
    delta = JobDelta()
    for _, source, target, tokens_in, tokens_out, cost, *rest in moves:
        delta.move(Status(source), Status(target))
        delta.add_usage(tokens_in, tokens_out, cost)
        answered_by = rest[1] if len(rest) > 1 else None
        if answered_by is not None and Status(target) == Status.PROCESSED:
            delta.answered(answered_by)
    return delta


class Journal:
    """Journaled writes of one writer (one *lane*) and their settlement.

    A write that fails leaves its batch *uncertain*: its entries may be
    recorded, its items partly written. Unless its caller holds it (tries
    the same batch again), the batch is settled before the lane's next
    write, from what its items show.
    """

    def __init__(
        self, items: Any, jobs: Any, lane: str, clients: Any = None
    ) -> None:
        """Write through the given collections.

        Args:
            items: The items collection.
            jobs: The jobs collection.
            lane: This writer's name in the entries it records.
            clients: The clients collection (their usage counters);
                None leaves them alone.
        """
        self.items = items
        self.jobs = jobs
        self.lane = lane
        self.usage = ClientUsage(clients) if clients is not None else None
        # Batches whose write failed after their journal entries may
        # have been recorded: settled (like a dead writer's) before the
        # next write, unless their writer holds them to try again.
        self._uncertain: dict[str, dict[ObjectId, list[Move]]] = {}
        # Uncertain batches their writer will try again: settling one
        # under its writer would race with the retry.
        self._held: set[str] = set()
        # Batches whose entries are known to be recorded: a retry must
        # not record them again (the counts may be applied and the
        # entries gone, and would be applied twice).
        self._journaled: set[str] = set()
        self._uncertain_clients: dict[str, dict[ObjectId, ObjectId]] = {}

    async def write(
        self,
        changes: list[Change],
        batch: str | None = None,
        *,
        held: bool = False,
    ) -> list[Change]:
        """Apply item changes and then their counters (module docstring).

        Safe to repeat with the same ``batch``: each entry is recorded
        once, items written by an earlier try carry its stamp, and the
        counts are applied once, with the removal of the entry.

        Args:
            changes: The item writes.
            batch: The batch id (a new one by default).
            held: The caller tries a failed write again with the same
                ``batch``: it is not settled meanwhile.

        Returns:
            The changes whose item write took effect.

        Raises:
            InvalidTransition: A change the item table does not allow
                (nothing is written).
            Exception: Whatever the database raised; the batch is then
                uncertain.
        """
        if not changes:
            return []
        for change in changes:
            if not allowed(
                ITEM_TRANSITIONS, change.actor, change.source, change.target
            ):
                raise InvalidTransition("item", change.source, change.target)
        batch = batch or str(ObjectId())
        await self.settle_uncertain()
        moves = journal_moves(changes)
        clients = job_clients(changes)
        try:
            if moves and batch not in self._journaled:
                await self._record(moves, clients, batch)
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
                await self._count(moves, clients, written, batch)
        except Exception:
            if moves:
                self._uncertain[batch] = moves
                self._uncertain_clients[batch] = clients
                if held:
                    self._held.add(batch)
            raise
        self._forget(batch)
        return written

    async def settle_uncertain(self) -> None:
        """Settle this lane's uncertain batches that nobody retries."""
        for batch in [b for b in self._uncertain if b not in self._held]:
            moves_by_job = self._uncertain.get(batch)
            if moves_by_job is None:
                continue  # settled meanwhile by a concurrent write
            clients = self._uncertain_clients.get(batch, {})
            for job_id, moves in moves_by_job.items():
                await self._settle_entry(
                    job_id,
                    {
                        "b": batch,
                        "lane": self.lane,
                        "c": clients.get(job_id),
                        "items": moves,
                    },
                )
            self._forget(batch)

    async def recover(self, job: dict[str, Any], lanes: Iterable[str]) -> int:
        """Settle journal entries that dead writers left in a job.

        Args:
            job: The job, with its ``journal``.
            lanes: The lanes of writers known to be dead.

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

    def _forget(self, batch: str) -> None:
        """A batch is written or settled: nothing more to do for it."""
        self._uncertain.pop(batch, None)
        self._uncertain_clients.pop(batch, None)
        self._held.discard(batch)
        self._journaled.discard(batch)

    async def _record(
        self,
        moves: dict[ObjectId, list[Move]],
        clients: dict[ObjectId, ObjectId],
        batch: str,
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
                            "c": clients.get(job_id),
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
        moves: dict[ObjectId, list[Move]],
        clients: dict[ObjectId, ObjectId],
        written: list[Change],
        batch: str,
    ) -> None:
        """Count the written items of a batch and remove its entries.

        The clients' counters first: once an entry is gone nobody would
        count them, while a client change repeated is applied once.
        """
        done = {c.item["_id"] for c in written}
        if self.usage is not None:
            await self.usage.apply_many(
                [
                    (
                        clients[job_id],
                        f"{batch}:{job_id}",
                        moves_usage(m for m in job_moves if m[0] in done),
                    )
                    for job_id, job_moves in moves.items()
                    if job_id in clients
                ]
            )
        await self.jobs.bulk_write(
            [
                UpdateOne(
                    # Only while the entry is there: once per batch.
                    {"_id": job_id, "journal.b": batch},
                    update_pipeline(
                        moves_delta(m for m in job_moves if m[0] in done),
                        journal_drop=[batch],
                    ),
                )
                for job_id, job_moves in moves.items()
            ],
            ordered=False,
        )

    async def _stamped(
        self, changes: list[Change], batch: str
    ) -> list[Change]:
        """Which changes took effect (after a partial batch)."""
        stamped = await self._stamped_ids(
            [c.item["_id"] for c in changes], batch
        )
        return [c for c in changes if c.item["_id"] in stamped]

    async def _stamped_ids(
        self, ids: list[ObjectId], batch: str
    ) -> set[ObjectId]:
        """The items among ``ids`` that carry the stamp of ``batch``."""
        stamped: set[ObjectId] = set()
        for chunk in chunks(ids, MAX_IDS_PER_QUERY):
            async for doc in self.items.find(
                {"_id": {"$in": list(chunk)}}, {"batch": 1}
            ):
                if doc.get("batch") == batch:
                    stamped.add(doc["_id"])
        return stamped

    async def _settle_entry(
        self, job_id: ObjectId, entry: dict[str, Any]
    ) -> None:
        """Count what an entry's items show written; remove the entry.

        The items carry the batch id of the write that changed them, so
        the counts and usage of the items written are applied and the
        entry is removed, in one update guarded by the entry.
        """
        moves = entry.get("items") or []
        stamped = await self._stamped_ids([m[0] for m in moves], entry["b"])
        if self.usage is not None and entry.get("c") is not None:
            await self.usage.apply(
                entry["c"],
                f"{entry['b']}:{job_id}",
                moves_usage(m for m in moves if m[0] in stamped),
            )
        await self.jobs.update_one(
            {"_id": job_id, "journal.b": entry["b"]},
            update_pipeline(
                moves_delta(m for m in moves if m[0] in stamped),
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
