"""Items through provider batches: the stored record and line decisions."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from pipeline.catalog import Pricing
from pipeline.states import Status
from pipeline.worker.provider_batches import (
    ProviderBatchRecord,
    decide_line,
)
from pipeline.worker.retry import RetryPolicy
from providers.base import Completion, Usage
from providers.batch import LineError, ProviderBatchRef
from providers.errors import PermanentError, RateLimitError, TransientError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PRICING = Pricing(input_per_million=2.0, output_per_million=8.0)


def _record(**changes):
    fields = {
        "id": ObjectId(),
        "model": "demo",
        "provider": "openai",
        "item_ids": [ObjectId(), ObjectId()],
        "created_at": NOW - timedelta(hours=2),
        "state": "submitted",
        "ref": ProviderBatchRef("openai", "batch_1"),
        "submitted_at": NOW - timedelta(hours=1),
    }
    fields.update(changes)
    return ProviderBatchRecord(**fields)


def _decide(line, attempts=1, max_attempts=3):
    # ``attempts`` as the claim left it (this attempt counted).
    item = {
        "_id": ObjectId(),
        "attempts": attempts,
        "maxAttempts": max_attempts,
    }
    return decide_line(
        item,
        line,
        pricing=PRICING,
        record=_record(),
        policy=RetryPolicy(base_delay_s=1.0, max_delay_s=5.0),
        rng=random.Random(1),
        now=NOW,
    )


def test_a_record_round_trips_through_its_document():
    record = _record(ref=ProviderBatchRef("gemini", "batches/x", ("a", "b")))
    again = ProviderBatchRecord.from_doc(record.to_doc())
    assert again == record
    assert again.lease_owner == f"batch:{record.id}"
    claimed = _record(state="claimed", ref=None, submitted_at=None)
    assert ProviderBatchRecord.from_doc(claimed.to_doc()).ref is None


def test_an_unknown_record_state_is_refused():
    doc = _record().to_doc()
    doc["state"] = "exploded"
    with pytest.raises(ValueError, match="exploded"):
        ProviderBatchRecord.from_doc(doc)


def test_an_answer_is_processed_at_the_batch_price():
    answer = Completion(
        text="42",
        finish_reason="stop",
        usage=Usage(1_000_000, 500_000),
        model="m",
        latency_ms=0.0,
        response_id="r1",
    )
    decision = _decide(answer, attempts=2)
    assert decision.status == Status.PROCESSED
    assert decision.attempts == 2
    # Half of live: 2.0 / 2 per million in, 8.0 / 2 per million out.
    assert decision.cost == pytest.approx(1.0 + 2.0)
    assert decision.result is not None
    assert decision.result["text"] == "42"
    assert decision.result["via"] == "batch"
    assert decision.result["providerBatchId"] == "batch_1"
    assert decision.result["latencyMs"] == 3_600_000.0
    assert (decision.input_tokens, decision.output_tokens) == (
        1_000_000,
        500_000,
    )


def test_a_retryable_line_error_goes_back_after_its_wait():
    error = RateLimitError("slow down", status_code=429, retry_after=30)
    decision = _decide(LineError(error), attempts=1)
    assert decision.status == Status.PENDING
    assert decision.attempts == 1
    assert decision.next_attempt_at >= NOW + timedelta(seconds=30)
    assert decision.error["type"] == "rate_limited"


def test_a_line_error_fails_the_item_when_attempts_run_out():
    decision = _decide(LineError(TransientError("boom")), attempts=3)
    assert (decision.status, decision.attempts) == (Status.FAILED, 3)
    assert decision.error["retryable"] is True


def test_a_permanent_line_error_fails_at_once():
    decision = _decide(LineError(PermanentError("bad", status_code=400)))
    assert (decision.status, decision.attempts) == (Status.FAILED, 1)
    assert decision.error["statusCode"] == 400


@pytest.mark.parametrize(
    "line",
    [None, LineError(TransientError("batch line batch_expired"), ran=False)],
)
def test_a_line_that_never_ran_gives_its_attempt_back(line):
    decision = _decide(line, attempts=3, max_attempts=3)
    assert decision.status == Status.PENDING
    assert decision.attempts == 2
    assert decision.next_attempt_at == NOW
    assert decision.error["type"] == "batch_not_run"
