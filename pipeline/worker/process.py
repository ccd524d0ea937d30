"""Process-level tuning and instrumentation of a worker actor."""

from __future__ import annotations

import gc

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
