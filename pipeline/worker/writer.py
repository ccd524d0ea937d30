"""Batched result writes: many outcomes, a few round trips.

Outcomes are buffered and written together when the batch is full or a
short interval has passed, so the database sees a handful of round
trips per hundred items. A write that fails (the database briefly gone)
is retried with backoff, outcomes kept in memory meanwhile; items stay
leased, so none is lost and none is claimed by anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from bson import ObjectId

from pipeline.backoff import backoff_s
from pipeline.logging import get_logger
from pipeline.worker.item_store import ItemStore, Outcome, WriteReport

log = get_logger(__name__)

#: Outcomes per write (bounded by the $in size that stays fast).
FLUSH_ITEMS = 100
#: Seconds an outcome may wait for companions before being written.
FLUSH_INTERVAL_S = 0.2
#: Seconds before the first retry of a failed write (then doubling).
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0


class ResultWriter:
    """Buffers outcomes and writes them in batches."""

    def __init__(
        self,
        items: ItemStore,
        on_written: Callable[[WriteReport], Awaitable[None]],
        *,
        flush_items: int = FLUSH_ITEMS,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self._items = items
        self._on_written = on_written
        self._flush_items = flush_items
        self._interval = flush_interval_s
        self._buffer: list[Outcome] = []
        self._batch: tuple[str, list[Outcome]] | None = None
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()

    @property
    def pending(self) -> int:
        """Outcomes not yet written."""
        taken = len(self._batch[1]) if self._batch else 0
        return taken + len(self._buffer)

    def add(self, outcome: Outcome) -> None:
        """Queue an outcome for the next batch."""
        self._buffer.append(outcome)
        self._arrived.set()
        if len(self._buffer) >= self._flush_items:
            self._full.set()

    async def run(self) -> None:
        """Write batches until cancelled."""
        failures = 0
        while True:
            await self._arrived.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            try:
                await self.flush()
                failures = 0
            except Exception as error:
                failures += 1
                delay = backoff_s(
                    failures, FIRST_BACKOFF_S, cap_s=MAX_BACKOFF_S
                )
                log.warning(
                    "result_write_failed",
                    error=str(error),
                    pending=self.pending,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)

    async def flush(self) -> None:
        """Write everything buffered now (raises if the write fails)."""
        while self._batch is not None or self._buffer:
            if self._batch is None:
                # A batch keeps its id and its outcomes until written, so
                # a retried write is applied once and to the same items.
                self._batch = (
                    str(ObjectId()),
                    self._buffer[: self._flush_items],
                )
                del self._buffer[: self._flush_items]
                if len(self._buffer) < self._flush_items:
                    self._full.clear()
            batch_id, outcomes = self._batch
            report = await self._items.finish(outcomes, batch_id)
            self._batch = None
            await self._on_written(report)
        self._arrived.clear()
