"""Job aggregates applied by the database itself (pipeline updates)."""

import uuid

import pytest
from bson import ObjectId

from pipeline.jobs.aggregation import (
    JobDelta,
    derive_status,
    initial_counts,
    update_pipeline,
)
from pipeline.states import Status
from pipeline.store import Store, create_mongo_client

S = Status
pytestmark = pytest.mark.anyio


@pytest.fixture
async def jobs(mongo_uri):
    store = Store(create_mongo_client(mongo_uri), f"agg-{uuid.uuid4().hex[:8]}")
    yield store.raw("jobs")
    await store.client.drop_database(store.db.name)
    await store.close()


async def _job(jobs, total=4, status=S.PENDING):
    job = {
        "_id": ObjectId(),
        "status": status.value,
        "active": True,
        "totalItems": total,
        "counts": initial_counts(total),
        "usage": {"inputTokens": 0, "outputTokens": 0},
        "cost": 0.0,
        "startedAt": None,
        "finishedAt": None,
        "_metadata": {"isDeleted": False},
    }
    await jobs.insert_one(job)
    return job["_id"]


async def _apply(jobs, job_id, **moves):
    delta = JobDelta()
    for name, n in moves.items():
        source, target = name.split("_to_")
        delta.move(S(source.upper()), S(target.upper()), n)
    delta.started = S.PROCESSING in {S(k.split("_to_")[1].upper()) for k in moves}
    await jobs.update_one({"_id": job_id}, update_pipeline(delta))
    return await jobs.find_one({"_id": job_id})


async def test_status_follows_the_counts(jobs):
    job_id = await _job(jobs)
    job = await _apply(jobs, job_id, pending_to_processing=2)
    assert job["status"] == "PROCESSING" and job["active"]
    assert job["counts"]["PENDING"] == 2 and job["counts"]["PROCESSING"] == 2
    assert job["startedAt"] is not None
    job = await _apply(jobs, job_id, processing_to_processed=2)
    assert job["status"] == "PROCESSING"
    job = await _apply(jobs, job_id, pending_to_processing=2)
    job = await _apply(jobs, job_id, processing_to_failed=2)
    assert job["status"] == "PROCESSED"  # some succeeded, failed > 0
    assert job["counts"]["FAILED"] == 2
    assert job["active"] is False
    assert job["finishedAt"] is not None
    assert derive_status(job) == S.PROCESSED


async def test_all_failed_is_failed(jobs):
    job_id = await _job(jobs, total=2)
    await _apply(jobs, job_id, pending_to_processing=2)
    job = await _apply(jobs, job_id, processing_to_failed=2)
    assert job["status"] == "FAILED"
    assert derive_status(job) == S.FAILED


async def test_client_statuses_stick(jobs):
    job_id = await _job(jobs, total=2, status=S.CANCELED)
    job = await _apply(jobs, job_id, pending_to_canceled=2)
    assert job["status"] == "CANCELED"
    assert job["active"] is False


async def test_usage_and_cost_add_up(jobs):
    job_id = await _job(jobs)
    for _ in range(3):
        delta = JobDelta()
        delta.add_usage(10, 5, 0.25)
        await jobs.update_one({"_id": job_id}, update_pipeline(delta))
    job = await jobs.find_one({"_id": job_id})
    assert job["usage"] == {"inputTokens": 30, "outputTokens": 15}
    assert job["cost"] == pytest.approx(0.75)


async def test_requeue_reopens_a_finished_job(jobs):
    job_id = await _job(jobs, total=1)
    await _apply(jobs, job_id, pending_to_processing=1)
    job = await _apply(jobs, job_id, processing_to_failed=1)
    assert job["finishedAt"] is not None
    job = await _apply(jobs, job_id, failed_to_pending=1)
    assert job["status"] == "PENDING"  # nothing of it has started again
    assert job["active"] is True
    assert job["finishedAt"] is None


def test_delta_bookkeeping():
    delta = JobDelta()
    assert delta.is_empty()
    delta.move(S.PENDING, S.PROCESSING, 3)
    delta.move(S.PROCESSING, S.PROCESSED, 3)
    assert delta.counts == {"PENDING": -3, "PROCESSING": 0, "PROCESSED": 3}
    assert not delta.is_empty()
