"""What the worker's polls read: only what they need, through an index."""

import pytest
from bson import ObjectId

from pipeline.jobs.shapes import JobOptions, new_job
from pipeline.worker.item_store import ACTIVE_JOBS, ItemStore
from tests.support.inprocess import OPENAI_0, job_items, submit

pytestmark = pytest.mark.anyio


async def test_active_jobs_are_found_through_an_index(env):
    store, _, _ = env
    jobs = []
    for n in range(30):
        job = new_job(
            ObjectId(),
            ObjectId(),
            ObjectId(),
            10,
            JobOptions(),
            ["m1"],
            ["openai"],
            None,
        )
        job["active"] = n % 10 == 0
        jobs.append(job)
    await store.raw("jobs").insert_many(jobs)
    lane = ItemStore(store, f"{OPENAI_0}/x")
    active = await lane.active_jobs()
    assert sorted(j["_id"] for j in active) == sorted(
        j["_id"] for j in jobs if j["active"]
    )
    plan = await store.raw("jobs").find(ACTIVE_JOBS).explain()
    assert plan["executionStats"]["totalDocsExamined"] == 3


async def test_leased_items_are_read_for_our_models_and_fields_only(
    env, fake_thread
):
    store, _, settings = env
    ours = await submit(store, settings, fake_thread, 3, model="m1")
    theirs = await submit(store, settings, fake_thread, 3, model="x9")
    lane = ItemStore(store, f"{OPENAI_0}/x")
    claimed = []
    for job in (ours, theirs):
        items = await job_items(store, job["_id"])
        claimed += await lane.claim(items[:2], f"{lane.lane}/1", 60)
    leased = await lane.leased_items(["m1", "m2"])
    assert sorted(i["_id"] for i in leased) == sorted(
        i["_id"] for i in claimed if i["model"] == "m1"
    )
    for item in leased:
        assert "userContent" not in item and "_metadata" not in item
        assert {"_id", "jobId", "leaseOwner", "leaseExpiresAt"} <= set(item)
