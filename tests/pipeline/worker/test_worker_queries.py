"""What the worker's polls read: only what they need, through an index."""

from datetime import timedelta

import pytest
from bson import ObjectId

from pipeline.jobs.shapes import JobOptions, new_job
from pipeline.store.document_collection import utcnow
from pipeline.worker.item_store import ACTIVE_JOBS, ItemStore
from tests.support.inprocess import (
    OPENAI_0,
    job_items,
    make_worker,
    submit,
    wait_done,
)

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


async def test_the_poll_reads_expired_leases_only_after_its_first(
    env, fake_thread, monkeypatch
):
    # Every lease is read once after a start (an earlier life's leases
    # must be taken back at once) and after a take-over; otherwise only
    # expired ones, which are few, while a busy worker may hold thousands.
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 3, model="m1")
    items = await job_items(store, job["_id"])
    other = ItemStore(store, "metasync-worker-openai-7/live")
    await other.claim(items[:2], f"{other.lane}/1", 3600)
    await store.raw("items").update_one(
        {"_id": items[0]["_id"]},
        {"$set": {"leaseExpiresAt": utcnow() - timedelta(seconds=1)}},
    )
    reads = []
    leased_items = ItemStore.leased_items

    async def observed(self, models, expired_before=None):
        found = await leased_items(self, models, expired_before)
        reads.append(
            (
                "every" if expired_before is None else "expired",
                sorted(i["_id"] for i in found),
            )
        )
        return found

    monkeypatch.setattr(ItemStore, "leased_items", observed)
    worker = make_worker(settings, store)
    await worker.start()  # its first poll reads every lease
    assert reads == [("every", [items[0]["_id"], items[1]["_id"]])]
    await worker.recovery.poll_once()
    assert reads[1][0] == "expired"
    assert items[1]["_id"] not in reads[1][1]  # held, not expired
    worker.take_over(["metasync-worker-openai-7"])
    await worker.recovery.poll_once()
    assert reads[2][0] == "every"
    # The dead worker's lease is taken back without waiting an hour.
    done = await wait_done(store, job["_id"], timeout_s=30)
    await worker.stop()
    assert done["counts"]["PROCESSED"] == 3
