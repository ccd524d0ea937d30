"""When an item may go to a provider batch, and when it must leave one.

The rule, for items of jobs that may use provider batches:

* ``batch``: to batches, until its deadline (if it has one) is within
  the safety margin: then live.
* ``auto``: to batches while its deadline is at least the vendors'
  batch window (:data:`~pipeline.jobs.mode.BATCH_WINDOW`, 24 h) plus the
  safety margin away, so a batch that takes its whole window still
  leaves the margin; live otherwise (an ``auto`` item without a
  deadline runs live).
* An item with a deadline that still waits for a batch, or sits in
  one, when the deadline is within the margin is taken back and run
  live: the margin (``BATCH_SAFETY_MARGIN``) is what running the rest
  live may take.

Every retry is decided again: a line error of an ``auto`` item goes to
the next batch only if its deadline still allows a whole window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.jobs.mode import BATCH_WINDOW
from pipeline.store.document_collection import utcnow

#: The modes whose items may go to provider batches.
BATCH_MODES = ("batch", "auto")


@dataclass
class DeadlineRule:
    """Decides batch or live for items of ``batch`` and ``auto`` jobs.

    Attributes:
        margin: How long before its deadline an item must be back from
            the batches, to run live.
        window: How long a provider batch may take.
        clock: The time deadlines are measured against (tests move it;
            nothing else reads it, so no other timestamp moves).
    """

    margin: timedelta
    window: timedelta = BATCH_WINDOW
    clock: Callable[[], datetime] = utcnow

    def to_batch(self, item: Mapping[str, Any]) -> bool:
        """Whether an item goes to a provider batch now (else live)."""
        mode = item.get("mode")
        deadline: datetime | None = item.get("deadline")
        if mode == "batch":
            return not self.due_back(deadline)
        if mode == "auto":
            return (
                deadline is not None
                and deadline - self.clock() >= self.window + self.margin
            )
        return False

    def due_back(self, deadline: datetime | None) -> bool:
        """Whether items with this deadline must leave the batches now."""
        return deadline is not None and self.clock() >= deadline - self.margin
