"""A worker's hand-off inbox against the database (no worker)."""

import asyncio
import uuid
from collections import deque

import pytest
from bson import ObjectId

from pipeline.store import Store, create_mongo_client
from pipeline.worker.backlog import Backlog, JobTrack
from pipeline.worker.handoffs import HandoffInbox, HandoffRecords
from pipeline.worker.item_store import ItemStore

pytestmark = pytest.mark.anyio

INBOX = "anthropic/0"


@pytest.fixture
async def store(mongo_uri):
    store = Store(
        create_mongo_client(mongo_uri), f"handoffs-{uuid.uuid4().hex[:8]}"
    )
    yield store
    await store.client.drop_database(store.db.name)
    await store.close()


def _track(job_id):
    return JobTrack(
        job_id=job_id,
        client_id=ObjectId(),
        priority=0,
        total_items=10,
        item_base=ObjectId(),
        max_attempts=2,
        cache=False,
        windows=deque(),
    )


async def _items(store, job_id, *states):
    items = [
        {
            "_id": ObjectId(),
            "jobId": job_id,
            "seq": n,
            "model": model,
            "status": status,
        }
        for n, (model, status) in enumerate(states)
    ]
    await store.raw("items").insert_many(items)
    return items


async def test_an_entry_stays_until_its_item_is_handed_over(store):
    job_id = ObjectId()
    landed, not_landed, final, untracked = await _items(
        store,
        job_id,
        ("m2", "PENDING"),  # moved: queued
        ("m1", "PROCESSING"),  # its write has not landed (or never will)
        ("m1", "PROCESSED"),  # retried on its old model and done
        ("m2", "PENDING"),  # of a job the receiver does not track yet
    )
    other_job = ObjectId()
    await store.raw("items").update_one(
        {"_id": untracked["_id"]}, {"$set": {"jobId": other_job}}
    )
    untracked["jobId"] = other_job
    records = HandoffRecords(store.raw("handoffs"))
    await records.send(
        (INBOX, item) for item in (landed, not_landed, final, untracked)
    )
    await records.send([(INBOX, landed)])  # a retried write: once
    backlog = Backlog()
    backlog.add_job(_track(job_id))
    inbox = HandoffInbox(
        records,
        INBOX,
        ItemStore(store, "receiver"),
        backlog,
        lambda: {"m2": object()},
        asyncio.Event(),
    )
    assert await inbox.receive() == 1
    assert [i["_id"] for i in backlog.take("m2", 10)] == [landed["_id"]]
    left = {e["i"] for e in await records.read(INBOX)}
    assert left == {not_landed["_id"], untracked["_id"]}

    # The write lands and the job is tracked: both are queued now.
    await store.raw("items").update_one(
        {"_id": not_landed["_id"]},
        {"$set": {"model": "m2", "status": "PENDING"}},
    )
    backlog.add_job(_track(other_job))
    assert await inbox.receive() == 2
    assert await records.read(INBOX) == []
    assert await inbox.receive() == 0
