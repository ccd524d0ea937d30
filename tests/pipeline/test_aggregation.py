"""Job aggregates applied by the database itself (pipeline updates)."""

import uuid

import pytest
from bson import ObjectId

from pipeline.jobs.aggregation import (
    JobDelta,
    derive_status,
    full_counts,
    initial_counts,
    started_pipeline,
    update_pipeline,
)
from pipeline.states import Status
from pipeline.store import Store, create_mongo_client

S = Status
pytestmark = pytest.mark.anyio


@pytest.fixture
async def jobs(mongo_uri):
    store = Store(
        create_mongo_client(mongo_uri), f"agg-{uuid.uuid4().hex[:8]}"
    )
    yield store.raw("jobs")
    await store.client.drop_database(store.db.name)
    await store.close()


async def _job(jobs, total=4, status=S.PENDING):
    job = {
        "_id": ObjectId(),
        "status": status.value,
        "active": True,
        "totalItems": total,
        "counts": initial_counts(),
        "usage": {"inputTokens": 0, "outputTokens": 0},
        "cost": 0.0,
        "startedAt": None,
        "finishedAt": None,
        "_metadata": {"isDeleted": False},
    }
    await jobs.insert_one(job)
    return job["_id"]


async def _move(jobs, job_id, source, target, n=1, **journal):
    delta = JobDelta()
    delta.move(source, target, n)
    await jobs.update_one({"_id": job_id}, update_pipeline(delta, **journal))
    return await jobs.find_one({"_id": job_id})


async def test_status_follows_the_counts(jobs):
    job_id = await _job(jobs)
    job = await jobs.find_one({"_id": job_id})
    assert derive_status(job) == S.PENDING
    await jobs.update_one({"_id": job_id}, started_pipeline())
    job = await jobs.find_one({"_id": job_id})
    assert job["status"] == "PROCESSING" and job["startedAt"] is not None
    job = await _move(jobs, job_id, S.PROCESSING, S.PROCESSED, 2)
    assert job["status"] == "PROCESSING" and job["active"]
    assert full_counts(job, processing=1) == {
        "PENDING": 1,
        "PROCESSING": 1,
        "PROCESSED": 2,
        "FAILED": 0,
        "CANCELED": 0,
    }
    job = await _move(jobs, job_id, S.PROCESSING, S.FAILED, 2)
    assert job["status"] == "PROCESSED"  # some succeeded, failed > 0
    assert job["active"] is False
    assert job["finishedAt"] is not None
    assert derive_status(job) == S.PROCESSED


async def test_all_failed_is_failed(jobs):
    job_id = await _job(jobs, total=2)
    await jobs.update_one({"_id": job_id}, started_pipeline())
    job = await _move(jobs, job_id, S.PROCESSING, S.FAILED, 2)
    assert job["status"] == "FAILED"
    assert derive_status(job) == S.FAILED


async def test_client_statuses_stick(jobs):
    job_id = await _job(jobs, total=2, status=S.CANCELED)
    job = await _move(jobs, job_id, S.PENDING, S.CANCELED, 2)
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
    await jobs.update_one({"_id": job_id}, started_pipeline())
    job = await _move(jobs, job_id, S.PROCESSING, S.FAILED)
    assert job["finishedAt"] is not None and not job["active"]
    job = await _move(jobs, job_id, S.FAILED, S.PENDING)
    assert job["status"] == "PROCESSING"
    assert job["active"] is True
    assert job["finishedAt"] is None


async def test_journal_entries_are_added_and_dropped(jobs):
    job_id = await _job(jobs)
    job = await _move(
        jobs,
        job_id,
        S.PROCESSING,
        S.PROCESSED,
        journal_add={"b": "b1", "lane": "w"},
    )
    job = await _move(
        jobs,
        job_id,
        S.PROCESSING,
        S.PROCESSED,
        journal_add={"b": "b2", "lane": "w"},
        journal_drop=["b1"],
    )
    assert [e["b"] for e in job["journal"]] == ["b2"]
    job = await _move(jobs, job_id, S.PENDING, S.PENDING, journal_drop=["b2"])
    assert job["journal"] == []


def test_delta_bookkeeping():
    delta = JobDelta()
    assert delta.is_empty()
    delta.move(S.PENDING, S.PROCESSING, 3)  # not stored: derived
    assert delta.is_empty()
    delta.move(S.PROCESSING, S.PROCESSED, 3)
    delta.move(S.FAILED, S.PENDING, 1)
    delta.add_usage(1, 2, 0.5)
    assert delta.counts == {"PROCESSED": 3, "FAILED": -1}
    undo = delta.reversed()
    assert undo.counts == {"PROCESSED": -3, "FAILED": 1}
    assert (undo.input_tokens, undo.output_tokens, undo.cost) == (-1, -2, -0.5)


async def test_a_job_with_journal_entries_stays_active(jobs):
    # A dead writer's entry must be found by the workers' poll of
    # active jobs, even when the counts say every item is final.
    job_id = await _job(jobs, total=1)
    job = await _move(
        jobs,
        job_id,
        S.PROCESSING,
        S.FAILED,
        journal_add={"b": "b1", "lane": "w"},
    )
    assert job["status"] == "FAILED" and job["active"] is True
    job = await _move(jobs, job_id, S.FAILED, S.FAILED, journal_drop=["b1"])
    assert job["active"] is False


def test_shown_counts_add_up_to_the_total():
    job = {"totalItems": 4, "counts": {"PROCESSED": 3}}
    counts = full_counts(job, processing=2)  # read a moment apart
    assert sum(counts.values()) == 4
    assert counts["PROCESSING"] == 1 and counts["PENDING"] == 0
