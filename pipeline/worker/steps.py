"""Database steps a worker cannot skip: tried until the database answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeline.backoff import backoff_s
from pipeline.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)

#: Seconds before a failed database step is tried again (then doubling).
STEP_BACKOFF_S = 0.2
#: The longest wait between tries of a database step.
STEP_MAX_BACKOFF_S = 5.0


async def until_done(operation: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a database step until it succeeds.

    The database may be briefly gone; claimed items wait meanwhile,
    under their lease (which the lease keeper renews).

    Args:
        operation: The step; it must be safe to run again.
        what: Its name in the log.
    """
    failures = 0
    while True:
        try:
            return await operation()
        except Exception as error:
            failures += 1
            log.warning("database_step_retry", step=what, error=str(error))
            await asyncio.sleep(
                backoff_s(failures, STEP_BACKOFF_S, cap_s=STEP_MAX_BACKOFF_S)
            )
