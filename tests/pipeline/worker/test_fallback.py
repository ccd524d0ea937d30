"""The fallback rule and the answers-by-model count (no worker)."""

import random
import uuid

import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from pipeline.jobs.aggregation import initial_counts
from pipeline.jobs.fallback_routes import Route
from pipeline.states import Status
from pipeline.store import Store, create_mongo_client
from pipeline.worker.backlog import owned_windows
from pipeline.worker.fallback import next_route, provider_down
from pipeline.worker.handoffs import window_owner
from pipeline.worker.journal import Change, Journal, journal_moves, moves_delta
from pipeline.worker.retry import RetryDecision, RetryPolicy
from providers.errors import (
    AuthenticationError,
    ContentFilterError,
    PermanentError,
    ProviderTimeout,
    RateLimitError,
    StreamError,
    TransientError,
)
from tests.support.flaky import FlakyCollection

S = Status
GIVE_UP = RetryDecision(retry=False)
ROUTES = {
    "m1": (Route("m2", "anthropic"), Route("m3", "openai")),
}

DOWN = [
    TransientError("503", status_code=503),
    TransientError("connection reset"),
    ProviderTimeout("timed out"),
    StreamError("cut"),
    RateLimitError("429", status_code=429),
]
ABOUT_THE_REQUEST = [
    PermanentError("400", status_code=400),
    PermanentError("422", status_code=422),
    ContentFilterError("refused", status_code=400),
    AuthenticationError("401", status_code=401),
    ValueError("a bug of ours"),
]


def _item(model="m1", **fields):
    return {"_id": ObjectId(), "jobId": ObjectId(), "model": model, **fields}


@pytest.mark.parametrize("error", DOWN, ids=repr)
def test_provider_down_errors_fall_back_once_retries_give_up(error):
    assert provider_down(error)
    assert next_route(_item(), error, GIVE_UP, ROUTES) == ROUTES["m1"][0]


@pytest.mark.parametrize("error", DOWN, ids=repr)
def test_nothing_moves_while_the_retry_policy_retries(error):
    retry = RetryDecision(retry=True, delay_s=1.0)
    assert next_route(_item(), error, retry, ROUTES) is None


@pytest.mark.parametrize("error", ABOUT_THE_REQUEST, ids=repr)
def test_errors_about_the_request_or_the_key_never_fall_back(error):
    assert not provider_down(error)
    assert next_route(_item(), error, GIVE_UP, ROUTES) is None


def test_a_rate_limit_falls_back_only_after_its_retries():
    error = RateLimitError("429", status_code=429, retry_after=1)
    policy, rng = RetryPolicy(), random.Random(1)
    early = policy.decide(error, 1, 3, rng)
    assert next_route(_item(), error, early, ROUTES) is None
    last = policy.decide(error, 3, 3, rng)
    assert next_route(_item(), error, last, ROUTES) == Route("m2", "anthropic")


def test_the_route_is_followed_in_order_to_its_end():
    error = TransientError("503", status_code=503)
    on_m2 = _item("m2", requestedModel="m1", fallbackFrom=["m1"])
    assert next_route(on_m2, error, GIVE_UP, ROUTES) == Route("m3", "openai")
    on_m3 = _item("m3", requestedModel="m1", fallbackFrom=["m1", "m2"])
    assert next_route(on_m3, error, GIVE_UP, ROUTES) is None


def test_a_job_without_routes_never_falls_back():
    # A job submitted with fallbacks: false stores no routes.
    error = TransientError("503", status_code=503)
    assert next_route(_item(), error, GIVE_UP, {}) is None
    # Nor does a model without fallbacks.
    assert next_route(_item("m9"), error, GIVE_UP, ROUTES) is None


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_the_receiver_is_the_replica_that_reads_the_items_window(replicas):
    job_id = ObjectId()
    total = 2_600
    for replica in range(replicas):
        for window in owned_windows(job_id, total, replica, replicas):
            for seq in (window * 500, window * 500 + 499):
                assert window_owner(job_id, seq, replicas) == replica


# -- answers by model, through the journal -----------------------------


def _change(job_id, answered_by):
    item = {"_id": ObjectId(), "jobId": job_id, "leaseOwner": "t"}
    return Change(
        item=item,
        target=S.PROCESSED,
        filter={"_id": item["_id"], "status": S.PROCESSING},
        update={"$set": {"status": S.PROCESSED}},
        answered_by=answered_by,
    )


def test_moves_count_answers_by_the_model_that_answered():
    job_id = ObjectId()
    changes = [_change(job_id, "m1"), _change(job_id, "gpt-4.1")]
    delta = moves_delta(journal_moves(changes)[job_id])
    assert delta.answers == {"m1": 1, "gpt-4.1": 1}


def test_an_entry_written_before_answers_were_recorded_still_settles():
    seven_fields = [ObjectId(), "PROCESSING", "PROCESSED", 1, 2, 0.5, None]
    delta = moves_delta([seven_fields])
    assert delta.counts == {S.PROCESSED: 1} and delta.answers == {}


@pytest.fixture
async def db(mongo_uri):
    store = Store(
        create_mongo_client(mongo_uri), f"fallback-{uuid.uuid4().hex[:8]}"
    )
    yield store
    await store.client.drop_database(store.db.name)
    await store.close()


@pytest.mark.anyio
async def test_a_retried_write_counts_answers_once(db):
    job_id = ObjectId()
    await db.raw("jobs").insert_one(
        {
            "_id": job_id,
            "status": "PROCESSING",
            "startedAt": 1,
            "totalItems": 3,
            "counts": initial_counts(),
            "answersByModel": {},
            "journal": [],
        }
    )
    # Dotted names are one key, not a nested path.
    changes = [
        _change(job_id, "m1"),
        _change(job_id, "gpt-4.1"),
        _change(job_id, "gpt-4.1"),
    ]
    await db.raw("items").insert_many(
        [{**c.item, "status": "PROCESSING"} for c in changes]
    )
    journal = Journal(db.raw("items"), db.raw("jobs"), "w/0")
    journal.jobs = flaky = FlakyCollection(journal.jobs)
    # The counts are applied but their reply is lost; the writer tries
    # the same batch again.
    flaky.fail_next("bulk_write", applied=True, after=1)
    with pytest.raises(AutoReconnect):
        await journal.write(changes, "b1", held=True)
    await journal.write(changes, "b1", held=True)
    doc = await db.raw("jobs").find_one({"_id": job_id})
    assert doc["answersByModel"] == {"m1": 1, "gpt-4.1": 2}
    assert doc["counts"][S.PROCESSED] == 3 and doc["journal"] == []
