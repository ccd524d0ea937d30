"""A client's usage counters: pending items, reserved and spent USD.

The counters live on the client document (``usage``) so that a quota
check is one conditional update of one document, never a read of the
client's jobs: a submission adds its items and its estimated cost only
if the result stays within the quotas (``{pendingItems: {$lte: max -
n}}`` and the same for cost), so two concurrent submissions cannot both
pass on the same room.

* ``pendingItems``: items not in a final status, of every job the client
  submitted (a submission reserves them; they leave as they finish, are
  canceled or fail; a requeue brings them back).
* ``reservedCost``: the estimated cost of those items (each item stores
  its own estimate, ``estCost``, released when it reaches a final
  status).
* ``spentCost``: what finished items and chat completions cost.

Every change carries a key (a job id, a write batch id) and is applied
once: the document keeps the last :data:`KEYS_KEPT` keys of each kind,
and a change whose key is among them is skipped, so a writer that
repeats a change after a failure (not knowing whether it was applied)
counts it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne

from pipeline.clients import Quotas, Usage
from pipeline.errors import QuotaExceeded

#: Keys of applied changes a client document keeps, per kind.
KEYS_KEPT = 1000
#: Retry-After for a client over its pending-items quota, in seconds.
PENDING_QUOTA_RETRY_S = 30
#: Retry-After for a client over its budget, in seconds.
BUDGET_RETRY_S = 3600

#: Key lists on the client document, by kind of change.
JOB_KEYS = "usage.jobKeys"
BATCH_KEYS = "usage.batchKeys"


@dataclass
class UsageDelta:
    """A change of a client's counters."""

    pending_items: int = 0
    reserved_cost: float = 0.0
    spent_cost: float = 0.0

    def is_empty(self) -> bool:
        """Whether applying it would change nothing."""
        return not (
            self.pending_items or self.reserved_cost or self.spent_cost
        )

    def inc(self) -> dict[str, Any]:
        """The ``$inc`` applying it."""
        return {
            "usage.pendingItems": self.pending_items,
            "usage.reservedCost": self.reserved_cost,
            "usage.spentCost": self.spent_cost,
        }


def _counter(name: str) -> Any:
    return {"$ifNull": [f"$usage.{name}", 0]}


class ClientUsage:
    """Reads and changes the usage counters of client documents."""

    def __init__(self, clients: Any) -> None:
        """Work on the raw ``clients`` collection."""
        self._clients = clients

    async def read(self, client_id: ObjectId) -> Usage:
        """A client's counters (zero for an unknown client)."""
        doc = await self._clients.find_one({"_id": client_id}, {"usage": 1})
        return Usage.from_doc(doc or {})

    async def reserve(
        self,
        client_id: ObjectId,
        quotas: Quotas,
        key: ObjectId,
        items: int,
        cost: float,
        *,
        other_spend: float = 0.0,
    ) -> None:
        """Reserve room for a job's items and cost, within the quotas.

        Safe to repeat with the same ``key``: it reserves once.

        Args:
            client_id: The client.
            quotas: Its quotas.
            key: The job the reservation is for.
            items: Its items.
            cost: Its estimated cost (USD).
            other_spend: USD spent outside these counters (optimization
                runs), counted against the budget too.

        Raises:
            QuotaExceeded: The items or the cost do not fit.
        """
        room: dict[str, Any] = {}
        if quotas.max_pending_items is not None:
            if items > quotas.max_pending_items:
                raise QuotaExceeded(
                    f"the job has {items} items; the quota is "
                    f"{quotas.max_pending_items} pending items",
                    retry_after=PENDING_QUOTA_RETRY_S,
                )
            # (A client without counters yet has none pending.)
            room["usage.pendingItems"] = {
                "$not": {"$gt": quotas.max_pending_items - items}
            }
        if quotas.budget is not None:
            left = quotas.budget - other_spend - cost
            room["$expr"] = {
                "$lte": [
                    {
                        "$add": [
                            _counter("reservedCost"),
                            _counter("spentCost"),
                        ]
                    },
                    left,
                ]
            }
        result = await self._clients.update_one(
            {"_id": client_id, JOB_KEYS: {"$ne": key}, **room},
            {
                "$inc": UsageDelta(items, cost).inc(),
                "$push": {JOB_KEYS: {"$each": [key], "$slice": -KEYS_KEPT}},
            },
        )
        if result.matched_count:
            return
        doc = await self._clients.find_one({"_id": client_id}, {"usage": 1})
        if doc is None or key in (doc.get("usage") or {}).get("jobKeys", []):
            return  # reserved by an earlier try (or no such client)
        usage = Usage.from_doc(doc)
        if (
            quotas.max_pending_items is not None
            and usage.pending_items + items > quotas.max_pending_items
        ):
            raise QuotaExceeded(
                f"{usage.pending_items} items are pending and the job has "
                f"{items}; the quota is {quotas.max_pending_items}",
                retry_after=PENDING_QUOTA_RETRY_S,
            )
        held = usage.reserved_cost + usage.spent_cost + other_spend
        raise QuotaExceeded(
            f"the job's estimated cost ({cost:.4f} USD) does not fit in "
            f"the budget of {quotas.budget} USD ({held:.4f} USD spent or "
            "reserved)",
            retry_after=BUDGET_RETRY_S,
        )

    async def has_reserved(self, client_id: ObjectId, key: ObjectId) -> bool:
        """Whether the reservation of job ``key`` was made (recently)."""
        doc = await self._clients.find_one(
            {"_id": client_id, JOB_KEYS: key}, {"_id": 1}
        )
        return doc is not None

    async def apply(
        self, client_id: ObjectId, key: str, delta: UsageDelta
    ) -> None:
        """Apply a change once, whatever the quotas (workers, releases).

        Args:
            client_id: The client.
            key: The change (a write batch, the release of a job).
            delta: What it changes.
        """
        if delta.is_empty():
            return
        await self._clients.update_one(
            {"_id": client_id, BATCH_KEYS: {"$ne": key}},
            {
                "$inc": delta.inc(),
                "$push": {BATCH_KEYS: {"$each": [key], "$slice": -KEYS_KEPT}},
            },
        )

    async def apply_many(
        self, changes: list[tuple[ObjectId, str, UsageDelta]]
    ) -> None:
        """:meth:`apply` several changes in one round trip."""
        ops = [
            UpdateOne(
                {"_id": client_id, BATCH_KEYS: {"$ne": key}},
                {
                    "$inc": delta.inc(),
                    "$push": {
                        BATCH_KEYS: {"$each": [key], "$slice": -KEYS_KEPT}
                    },
                },
            )
            for client_id, key, delta in changes
            if not delta.is_empty()
        ]
        if ops:
            await self._clients.bulk_write(ops, ordered=False)

    async def within_budget(
        self, client_id: ObjectId, budget: float, cost: float
    ) -> bool:
        """Whether ``cost`` more fits in the budget now (no reservation)."""
        doc = await self._clients.find_one(
            {
                "_id": client_id,
                "$expr": {
                    "$lte": [
                        {
                            "$add": [
                                _counter("reservedCost"),
                                _counter("spentCost"),
                            ]
                        },
                        budget - cost,
                    ]
                },
            },
            {"_id": 1},
        )
        return doc is not None

    async def charge(self, client_id: ObjectId, key: str, cost: float) -> None:
        """Record a cost spent outside jobs (a chat completion)."""
        await self.apply(client_id, key, UsageDelta(spent_cost=cost))
