"""The worker's short-lived tasks: claims, calls, window reads, sweeps."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

from pipeline.logging import get_logger

log = get_logger(__name__)


class Tasks:
    """Starts tasks, keeps them until they end, logs the ones that fail."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self.running: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self.running)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` as a task of its own."""
        # A fresh context: a task spawned while a call's job and item ids
        # are bound must not log under them.
        task = asyncio.get_running_loop().create_task(
            coroutine, context=contextvars.Context()
        )
        self.running.add(task)
        task.add_done_callback(self._done)

    async def wait(self, limit_s: float) -> None:
        """Wait until every task has ended, at most ``limit_s`` seconds."""
        if self.running:
            await asyncio.wait(list(self.running), timeout=limit_s)

    async def drain(self) -> None:
        """Wait until no task runs, tasks started meanwhile included."""
        while self.running:
            await asyncio.wait(list(self.running))

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "worker_task_failed",
                worker=self._owner,
                error=repr(task.exception()),
            )
