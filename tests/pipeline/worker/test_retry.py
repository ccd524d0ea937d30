import random

import pytest

from pipeline.worker.retry import RetryPolicy, error_record
from providers.errors import (
    AuthenticationError,
    ContentFilterError,
    PermanentError,
    RateLimitError,
    StreamError,
    TransientError,
)

POLICY = RetryPolicy(base_delay_s=1, max_delay_s=8, jitter=1.0)


@pytest.mark.parametrize(
    "error",
    [
        TransientError("503"),
        StreamError("cut"),
        RateLimitError("429"),
        KeyError("bug"),
    ],
)
def test_retryable_errors_retry_until_max_attempts(error):
    rng = random.Random(1)
    assert POLICY.decide(error, 1, 3, rng).retry
    assert POLICY.decide(error, 2, 3, rng).retry
    assert not POLICY.decide(error, 3, 3, rng).retry


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("400"),
        ContentFilterError("no"),
        AuthenticationError("401"),
    ],
)
def test_permanent_errors_fail_at_once(error):
    assert not POLICY.decide(error, 1, 5, random.Random(1)).retry


def test_backoff_is_capped_exponential_with_jitter():
    rng = random.Random(7)
    for attempt in range(1, 10):
        ceiling = min(8, 2 ** (attempt - 1))
        delays = [POLICY.backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8


def test_retry_after_is_never_undercut():
    rng = random.Random(3)
    error = RateLimitError("slow down", retry_after=30)
    for attempt in (1, 2):
        decision = POLICY.decide(error, attempt, 5, rng)
        assert decision.retry and decision.delay_s >= 30


def test_error_record_keeps_the_type():
    record = error_record(
        RateLimitError("slow", status_code=429, retry_after=2)
    )
    assert record == {
        "type": "rate_limited",
        "message": "slow",
        "retryable": True,
        "statusCode": 429,
    }
    assert error_record(ValueError("x"))["type"] == "internal"
