"""Handing an item over to another provider's worker (a fallback).

A worker reads each job's windows once and skips the items of models it
does not serve, so an item that moves to a model of another provider
(:mod:`pipeline.worker.fallback`) must be pointed out to that provider's
worker. Each worker replica has an *inbox*: one document of the
``handoffs`` collection, ``{_id: "provider/replica", items: [{i: item
id, j: job id}, ...]}``, addressed by ``_id`` (no secondary index).

The writer records the item in the inbox of the replica that reads the
item's window *before* it writes the item (PROCESSING -> PENDING on the
new model); then it signals that worker. The receiver, on the signal
and at every poll (so a lost signal only delays the item), reads its
inbox and, for each entry:

* the item is on one of its models and PENDING: queued (once its job is
  tracked; the entry stays until then), entry removed;
* the item is on one of its models and already leased, gone, or in a
  final status: entry removed;
* otherwise (the item write has not landed, or never will: the writer
  died and the item was retried on its old model): entry kept, looked
  at again at the next poll, removed once the item is final.

So no item is stranded: until it is queued its entry stays, and a
receiver that restarts reads every window of its jobs anyway. Entries
repeat harmlessly (a retried write, a signal and a poll at once): the
claim is atomic and the backlog queues an item once. An inbox holds
only items in transit (about 50 bytes each: a whole 100,000-item job
moved at once is about 5 MB, under a document's 16 MB).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from pipeline.jobs.item_ids import WINDOW_ITEMS
from pipeline.jobs.shapes import StoredItem
from pipeline.logging import get_logger
from pipeline.states import FINAL_ITEM_STATUSES, Status
from pipeline.store.document_collection import utcnow

if TYPE_CHECKING:
    from pipeline.worker.backlog import Backlog
    from pipeline.worker.item_store import ItemStore

log = get_logger(__name__)

S = Status

#: Tells another worker replica its inbox has items: ``(provider,
#: replica)``; fire and forget (the poll is the safety net).
SignalHandoff = Callable[[str, int], None]


@dataclass(frozen=True)
class Handoff:
    """An item's move to a fallback model, as its outcome carries it.

    Attributes:
        model: The catalog model that takes the item over.
        provider: The provider serving it.
        requested: The model the client asked for.
        tried: The models that gave up on the item, in order.
        inbox: The receiving replica's inbox (``provider/replica``)
            when another provider's worker takes the item over; None
            when this worker does.
    """

    model: str
    provider: str
    requested: str
    tried: tuple[str, ...]
    inbox: str | None = None


def inbox_id(provider: str, replica: int) -> str:
    """The ``_id`` of a worker replica's inbox."""
    return f"{provider}/{replica}"


def window_owner(job_id: ObjectId, seq: int, replicas: int) -> int:
    """The replica of a provider's worker that reads item ``seq``.

    The inverse of :func:`pipeline.worker.backlog.owned_windows`.
    """
    offset = int(str(job_id)[-6:], 16) % replicas
    return (seq // WINDOW_ITEMS + offset) % replicas


def _without(ids: list[ObjectId]) -> dict[str, Any]:
    """The inbox's entries, but those of ``ids``."""
    return {
        "$filter": {
            "input": {"$ifNull": ["$items", []]},
            "cond": {"$not": [{"$in": ["$$this.i", ids]}]},
        }
    }


class HandoffRecords:
    """The inboxes (the ``handoffs`` collection)."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    async def send(
        self, entries: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> None:
        """Record items in inboxes (idempotent).

        Args:
            entries: ``(inbox, item)`` pairs.
        """
        by_inbox: dict[str, dict[ObjectId, ObjectId]] = {}
        for inbox, item in entries:
            by_inbox.setdefault(inbox, {})[item["_id"]] = item["jobId"]
        for inbox, items in by_inbox.items():
            ids = list(items)
            added = [{"i": i, "j": j} for i, j in items.items()]
            await self.collection.update_one(
                {"_id": inbox},
                [
                    {
                        "$set": {
                            "items": {
                                "$concatArrays": [
                                    _without(ids),
                                    {"$literal": added},
                                ]
                            },
                            "updatedAt": utcnow(),
                        }
                    }
                ],
                upsert=True,
            )

    async def read(self, inbox: str) -> list[dict[str, Any]]:
        """An inbox's entries."""
        doc = await self.collection.find_one({"_id": inbox})
        return list((doc or {}).get("items") or [])

    async def remove(self, inbox: str, ids: list[ObjectId]) -> None:
        """Remove entries from an inbox."""
        if ids:
            await self.collection.update_one(
                {"_id": inbox}, [{"$set": {"items": _without(ids)}}]
            )


class HandoffInbox:
    """One worker replica's side of the hand-off: queue what it receives."""

    def __init__(
        self,
        records: HandoffRecords,
        inbox: str,
        items: ItemStore,
        backlog: Backlog,
        models: Callable[[], Mapping[str, Any]],
        wake: asyncio.Event,
    ) -> None:
        """Receive into one worker's backlog.

        Args:
            records: The inboxes.
            inbox: This replica's (:func:`inbox_id`).
            items: Reads the items.
            backlog: Where ready items are queued.
            models: The models the worker serves now.
            wake: Set to wake the scheduler when items were queued.
        """
        self._records = records
        self._inbox = inbox
        self._items = items
        self._backlog = backlog
        self._models = models
        self._wake = wake
        self._lock = asyncio.Lock()
        self.received = 0
        self.signals = 0

    async def receive(self, *, signalled: bool = False) -> int:
        """Queue the items handed to this replica (module docstring).

        Args:
            signalled: Called on a sender's signal (counted in
                :attr:`signals`), not by the poll.

        Returns:
            How many items were queued.
        """
        self.signals += signalled
        # One at a time: a signal and a poll reading the same entries
        # would only queue each item once anyway, but read twice.
        async with self._lock:
            entries = await self._records.read(self._inbox)
            if not entries:
                return 0
            found = {
                item["_id"]: item
                for item in await self._items.items_by_id(
                    [e["i"] for e in entries]
                )
            }
            done, queued = self._queue(entries, found)
            await self._records.remove(self._inbox, done)
        if queued:
            self.received += queued
            log.info("handoffs_received", inbox=self._inbox, items=queued)
            self._wake.set()
        return queued

    def _queue(
        self,
        entries: list[dict[str, Any]],
        found: Mapping[ObjectId, StoredItem],
    ) -> tuple[list[ObjectId], int]:
        """Queue what is ready; return the entries done and the count."""
        models = self._models()
        done: list[ObjectId] = []
        queued = 0
        for entry in entries:
            item = found.get(entry["i"])
            if item is None or item["status"] in FINAL_ITEM_STATUSES:
                done.append(entry["i"])
                continue
            if item["model"] not in models:
                continue  # not handed over (yet): look again later
            if item["status"] == S.PENDING:
                track = self._backlog.jobs.get(item["jobId"])
                if track is None:
                    continue  # tracked at the next poll
                if not track.canceled:
                    self._backlog.add_found(item["jobId"], [item], utcnow())
                    queued += 1
            done.append(entry["i"])
        return done, queued
