"""Process-level tuning, instrumentation and shutdown of a worker actor."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterable
from typing import Any

from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)


def tune_gc() -> None:
    """Make garbage collection pauses rarer and shorter in a worker.

    Every provider call allocates many short-lived objects; with the
    default thresholds the collector runs hundreds of times a second and
    its full passes walk every module object loaded at start-up. Frozen
    start-up objects are skipped, and young collections run less often.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(20_000, middle, old)


class RoundTripCounter(CommandListener):
    """Counts database round trips (the worker reports them)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: CommandStartedEvent) -> None:
        """Count one command sent."""
        self.count += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        """Nothing to do."""

    def failed(self, event: CommandFailedEvent) -> None:
        """Nothing to do."""


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait until every one has ended.

    A task is cancelled again while it runs on: on Python 3.11,
    ``asyncio.wait_for`` swallows a cancellation that arrives together
    with what it waits for (a loop woken as it is stopped), and the task
    carries on as if nothing happened.
    """
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1)
