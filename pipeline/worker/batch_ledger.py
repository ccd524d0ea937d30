"""The ``provider_batches`` collection: one record per provider batch.

A record is written before its items are claimed or anything reaches
the provider, then moved ``claimed`` → ``submitted`` → ``collected``,
each move guarded by the state it leaves (see
:mod:`pipeline.worker.provider_batches` for why). The collection stays
small (one document per provider batch, not per item) and its open
records are found through the ``(owner, provider, state)`` index, or,
for records whose owner no longer runs, ``(provider, state)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.store import Store
from pipeline.worker.names import ActorName
from pipeline.worker.provider_batches import ProviderBatchRecord
from providers.batch import ProviderBatchRef

COLLECTION = "provider_batches"
OPEN_STATES = ("claimed", "submitted")


class BatchLedger:
    """Reads and moves provider batch records.

    Args:
        store: The database.
    """

    def __init__(self, store: Store) -> None:
        self.records: Any = store.raw(COLLECTION)

    async def add(self, record: ProviderBatchRecord) -> None:
        """Write a new ``claimed`` record."""
        await self.records.insert_one(record.to_doc())

    async def mark_submitted(
        self, record: ProviderBatchRecord, ref: ProviderBatchRef, now: datetime
    ) -> bool:
        """Store the vendor's reference of a claimed record.

        Returns:
            Whether the record was still ``claimed`` (and is now
            ``submitted``).
        """
        result = await self.records.update_one(
            {"_id": record.id, "state": "claimed"},
            {
                "$set": {
                    "state": "submitted",
                    "ref": ref.to_doc(),
                    "submittedAt": now,
                }
            },
        )
        if result.modified_count:
            record.state, record.ref, record.submitted_at = (
                "submitted",
                ref,
                now,
            )
        return bool(result.modified_count)

    async def mark_collected(
        self, record: ProviderBatchRecord, now: datetime
    ) -> bool:
        """Close a record whose results are written (or that holds none).

        Returns:
            Whether the record was open (and is now ``collected``).
        """
        result = await self.records.update_one(
            {"_id": record.id, "state": {"$in": list(OPEN_STATES)}},
            {"$set": {"state": "collected", "collectedAt": now}},
        )
        if result.modified_count:
            record.state, record.collected_at = "collected", now
        return bool(result.modified_count)

    async def mark_cancel_requested(self, record: ProviderBatchRecord) -> None:
        """Remember that the vendor was asked to cancel the batch."""
        await self.records.update_one(
            {"_id": record.id}, {"$set": {"cancelRequested": True}}
        )
        record.cancel_requested = True

    async def set_deadline(
        self, record: ProviderBatchRecord, deadline: datetime | None
    ) -> None:
        """Store the earliest deadline of the items a record still holds."""
        await self.records.update_one(
            {"_id": record.id}, {"$set": {"deadline": deadline}}
        )
        record.deadline = deadline

    async def adopt_orphans(
        self, provider: str, owner: str, replicas: int
    ) -> int:
        """Take over open records of replicas that no longer run.

        Replica ``k``'s records are moved by nobody once
        ``WORKER_REPLICAS`` drops to ``k`` or below (only replica ``k``
        moves them). Replica ``k mod replicas`` takes them over: one
        actor runs a role at a time, and a removed replica's rounds
        stopped when it was retired.

        Args:
            provider: The provider's registry name.
            owner: The adopting worker's role (its replica index).
            replicas: The replicas the provider has now.

        Returns:
            How many records changed owner.
        """
        mine = _replica(owner, provider)
        if mine is None:
            return 0
        docs = await self.records.find(
            {"state": {"$in": list(OPEN_STATES)}, "provider": provider},
            {"owner": 1},
        ).to_list()
        orphans = {}
        for doc in docs:
            replica = _replica(doc.get("owner"), provider)
            if replica is None or replica < replicas:
                continue  # a running replica's, or no worker's
            if replica % replicas == mine:
                orphans[doc["_id"]] = doc["owner"]
        if not orphans:
            return 0
        result = await self.records.update_many(
            {
                "_id": {"$in": list(orphans)},
                "owner": {"$in": sorted(set(orphans.values()))},
            },
            {"$set": {"owner": owner}},
        )
        return int(result.modified_count)

    async def open_records(
        self, provider: str, owner: str | None = None
    ) -> list[ProviderBatchRecord]:
        """An owner's records of a provider not yet collected, oldest first.

        Args:
            provider: The provider's registry name.
            owner: The worker that wrote them (None: records written
                without an owner).
        """
        docs = await self.records.find(
            {
                "state": {"$in": list(OPEN_STATES)},
                "provider": provider,
                "owner": owner,
            }
        ).to_list()
        records = [ProviderBatchRecord.from_doc(d) for d in docs]
        return sorted(records, key=lambda r: r.created_at)


def _replica(owner: str | None, provider: str) -> int | None:
    """The replica index of a worker role of ``provider`` (None: other)."""
    parsed = ActorName.parse(owner) if owner else None
    slot = parsed.worker_slot() if parsed is not None else None
    if slot is None or slot[0] != provider:
        return None
    return slot[1]
