"""Cosmos DB throttling (error 16500) is transient and honours its delay.

The error is built as pymongo builds it from a Cosmos DB reply: an
``OperationFailure`` carrying the server's reply document, whose
``errmsg`` holds ``RetryAfterMs``.
"""

import time

import pytest
from pymongo.errors import OperationFailure

from pipeline.store import safe_operation
from pipeline.store.retry import is_transient, throttle_delay_s

pytestmark = pytest.mark.anyio


def cosmos_throttled(retry_after_ms: int) -> OperationFailure:
    message = (
        f"Error=16500, RetryAfterMs={retry_after_ms}, Details='Response "
        "status code does not indicate success: TooManyRequests (429); "
        "Substatus: 3200; ActivityId: 6a3c1e4e-0000-0000-0000-000000000000; "
        'Reason: (Message: {"Errors":["Request rate is large. More '
        "Request Units may be needed, so no changes were made. Please "
        "retry this request later.\"]})'"
    )
    reply = {
        "ok": 0.0,
        "errmsg": message,
        "code": 16500,
        "codeName": "RequestRateTooLarge",
    }
    return OperationFailure(message, code=16500, details=reply)


def test_throttling_is_transient_with_its_retry_after():
    error = cosmos_throttled(12)
    assert is_transient(error)
    assert throttle_delay_s(error) == pytest.approx(0.012)


def test_other_server_errors_stay_permanent():
    error = OperationFailure(
        "unknown operator: $foo",
        code=2,
        details={"ok": 0.0, "errmsg": "unknown operator: $foo", "code": 2},
    )
    assert not is_transient(error)
    assert throttle_delay_s(error) is None


def test_throttling_without_a_delay_still_waits_a_little():
    message = "Request rate is large"
    error = OperationFailure(
        message,
        code=16500,
        details={"ok": 0.0, "errmsg": message, "code": 16500},
    )
    assert is_transient(error)
    delay = throttle_delay_s(error)
    assert delay is not None and delay > 0


async def test_safe_operation_waits_the_retry_after_then_succeeds():
    calls = 0

    async def operation():
        nonlocal calls
        calls += 1
        if calls < 3:
            raise cosmos_throttled(250)
        return "done"

    started = time.monotonic()
    assert (
        await safe_operation(operation, attempts=3, base_delay_s=0.001)
        == "done"
    )
    assert calls == 3
    # Two waits of at least the server's 250 ms, though the backoff
    # alone would have waited about a millisecond.
    assert time.monotonic() - started >= 0.5
