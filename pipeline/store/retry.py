"""A retry wrapper for database operations that fail transiently.

The driver already retries a single read or write once; this wrapper
rides out a database that is briefly gone (a restart, a failover) or
throttling (Azure Cosmos DB's error 16500, which says how long to wait)
and, when it stays gone, raises :class:`DatabaseUnavailable` (a 503)
instead of a driver exception.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from pipeline.backoff import backoff_s
from pipeline.errors import DatabaseUnavailable
from pipeline.logging import get_logger

T = TypeVar("T")

log = get_logger(__name__)

#: Driver errors that mean "the server could not be reached".
TRANSIENT_ERRORS: tuple[type[PyMongoError], ...] = (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)


#: Azure Cosmos DB for MongoDB (RU): request rate too large. The request
#: was not executed, so any operation may be sent again.
COSMOS_THROTTLED = 16500

#: Wait on a throttling error that names no delay.
DEFAULT_THROTTLE_S = 0.1

_RETRY_AFTER_MS = re.compile(r"RetryAfterMs=(\d+)")


def throttle_delay_s(error: BaseException) -> float | None:
    """How long the server asked to wait, if ``error`` is throttling.

    Cosmos DB puts ``RetryAfterMs=<n>`` in the error message.

    Returns:
        Seconds to wait, or None when ``error`` is not throttling.
    """
    if not isinstance(error, OperationFailure):
        return None
    if error.code != COSMOS_THROTTLED:
        return None
    reply = error.details or {}
    message = str(reply.get("errmsg") or error)
    found = _RETRY_AFTER_MS.search(message)
    return int(found.group(1)) / 1000 if found else DEFAULT_THROTTLE_S


def is_transient(error: BaseException) -> bool:
    """Whether a driver error may go away on retry."""
    if isinstance(error, TRANSIENT_ERRORS):
        return True
    if throttle_delay_s(error) is not None:
        return True
    return isinstance(error, PyMongoError) and (
        error.has_error_label("TransientTransactionError")
        or error.has_error_label("RetryableWriteError")
    )


async def safe_operation(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    base_delay_s: float = 0.2,
    what: str = "database operation",
) -> T:
    """Run ``operation``, retrying transient database failures.

    Only wrap operations that are safe to repeat (reads, updates guarded
    by a filter, inserts with client-chosen ids).

    Args:
        operation: A coroutine factory, called once per attempt.
        attempts: Tries before giving up.
        base_delay_s: First backoff delay; doubles per attempt, jittered
            by half of it either way.
        what: Short description for the log.

    Returns:
        The operation's result.

    Raises:
        DatabaseUnavailable: The database stayed unreachable.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except PyMongoError as error:
            if not is_transient(error):
                raise
            if attempt == attempts:
                log.error("database_unavailable", what=what, error=str(error))
                raise DatabaseUnavailable(
                    "the database is unavailable; retry later"
                ) from error
            log.warning(
                "database_retry", what=what, attempt=attempt, error=str(error)
            )
            # Between half and one and a half times the doubling delay,
            # and never sooner than a throttling server asked.
            delay = backoff_s(attempt, 1.5 * base_delay_s, jitter=2 / 3)
            await asyncio.sleep(max(delay, throttle_delay_s(error) or 0.0))
    raise AssertionError("unreachable")
