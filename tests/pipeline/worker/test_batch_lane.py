"""The worker's batch lane: batch jobs through provider batches.

A real worker (no Ray), the real database and the fake provider's batch
endpoints: items of ``mode: "batch"`` jobs are not called live but
submitted in provider batches by the worker's rounds, and each worker
moves only the provider batches it wrote.
"""

import asyncio

import pytest
from bson import ObjectId

from pipeline.catalog import Pricing
from pipeline.states import Status
from pipeline.worker.batch_ledger import BatchLedger
from pipeline.worker.batch_submitter import BatchModel, BatchSubmitter
from pipeline.worker.engine import open_worker
from pipeline.worker.item_store import ItemStore
from pipeline.worker.names import worker_role
from providers.batch import batch_client
from providers.fake import fake_model_config
from tests.support.inprocess import (
    job_items,
    local_sync,
    make_worker,
    submit,
    wait_done,
)

pytestmark = pytest.mark.anyio
_WAIT_SECONDS = 60


def _settings(settings):
    return settings.with_overrides(batch_submit_interval=0.05)


async def test_batch_items_go_through_provider_batches_not_live_calls(
    env, fake_thread
):
    store, _, settings = env
    fake = fake_thread
    job = await submit(store, settings, fake, 6, model="bl1", mode="batch")
    fake.configure(models={"bl1": {"batch": {"durationMs": 50}}})
    creates = fake.batch_stats().get("openai", {}).get("creates", 0)
    worker = make_worker(_settings(settings), store)
    await worker.notify_job(job)
    done = await wait_done(store, job["_id"], _WAIT_SECONDS)
    await worker.stop()

    assert done["status"] == Status.PROCESSED
    assert done["counts"][Status.PROCESSED] == 6
    items = await job_items(store, job["_id"])
    assert [i["result"]["text"] for i in items] == [
        f"item {n}" for n in range(6)
    ]
    assert {i["result"]["via"] for i in items} == {"batch"}
    assert {i["attempts"] for i in items} == {1}
    assert done["cost"] == pytest.approx(
        sum(i["result"]["cost"] for i in items)
    )
    # No live call; at least one provider batch.
    assert fake.stats("bl1")["requests"] == 0
    assert fake.batch_stats()["openai"]["creates"] > creates
    records = await store.raw("provider_batches").find({}).to_list()
    # Owned by the worker's role: its name without the code version.
    assert records and {r["owner"] for r in records} == {
        worker_role("openai", 0)
    }
    assert {r["state"] for r in records} == {"collected"}


async def test_a_line_error_is_retried_in_a_later_batch_within_max_attempts(
    env, fake_thread
):
    store, _, settings = env
    fake = fake_thread
    job = await submit(
        store, settings, fake, 3, model="bl2", mode="batch", max_attempts=2
    )
    items = await job_items(store, job["_id"])
    failing = str(items[1]["_id"])
    fake.configure(
        models={
            "bl2": {
                "batch": {
                    "durationMs": 50,
                    "lineErrors": {"customIds": [failing], "status": 500},
                }
            }
        }
    )
    worker = make_worker(_settings(settings), store)
    await worker.notify_job(job)
    done = await wait_done(store, job["_id"], _WAIT_SECONDS)
    await worker.stop()

    after = {str(i["_id"]): i for i in await job_items(store, job["_id"])}
    assert after[failing]["status"] == Status.FAILED
    assert after[failing]["attempts"] == 2
    assert after[failing]["error"]["type"] == "transient"
    others = [i for k, i in after.items() if k != failing]
    assert {i["status"] for i in others} == {Status.PROCESSED}
    assert {i["attempts"] for i in others} == {1}
    assert done["status"] == Status.PROCESSED
    assert done["counts"] == {
        Status.PROCESSED: 2,
        Status.FAILED: 1,
        Status.CANCELED: 0,
    }
    # Two provider batches: the first, then the retried line's.
    records = await store.raw("provider_batches").find({}).to_list()
    assert len(records) == 2
    assert fake.stats("bl2")["requests"] == 0


async def test_a_worker_moves_only_its_own_provider_batches(env, fake_thread):
    store, _, settings = env
    fake = fake_thread
    job = await submit(store, settings, fake, 2, model="bl3", mode="batch")
    fake.configure(models={"bl3": {"batch": {"durationMs": 30}}})
    # Replica 0 submitted the batch, then died.
    client = batch_client("openai")
    first = BatchSubmitter(
        "openai",
        client,
        ItemStore(store, "dead-worker/lane"),
        BatchLedger(store),
        {
            "bl3": BatchModel(
                "bl3",
                fake_model_config("openai", "bl3", fake.url),
                None,
                Pricing(),
            )
        },
        owner=worker_role("openai", 0),
    )
    [record] = await first.submit("bl3", await job_items(store, job["_id"]))
    await client.aclose()
    polls = fake.batch_stats()["openai"].get("polls", 0)

    # Replica 1 runs rounds, and leaves replica 0's batch alone.
    other = open_worker(
        "openai", 1, _settings(settings), local_sync(), store=store
    )
    await other.start()
    assert other.batch_lane is not None
    async with asyncio.timeout(_WAIT_SECONDS):
        while other.batch_lane.rounds < 5:  # noqa: ASYNC110 (a counter)
            await asyncio.sleep(0.02)
    await other.stop()
    assert fake.batch_stats()["openai"].get("polls", 0) == polls
    stored = await store.raw("provider_batches").find_one({"_id": record.id})
    assert stored["state"] == "submitted"

    # Replica 0 restarted (the same role) takes its batch back.
    successor = make_worker(_settings(settings), store)
    await successor.start()
    done = await wait_done(store, job["_id"], _WAIT_SECONDS)
    await successor.stop()
    assert done["status"] == Status.PROCESSED
    items = await job_items(store, job["_id"])
    assert {i["result"]["via"] for i in items} == {"batch"}


async def test_batches_of_a_removed_replica_are_taken_over(env, fake_thread):
    store, _, settings = env
    fake = fake_thread
    job = await submit(store, settings, fake, 2, model="bl6", mode="batch")
    fake.configure(models={"bl6": {"batch": {"durationMs": 30}}})
    # Replica 2 of three submitted the batch; then WORKER_REPLICAS went
    # down to 2, and nobody runs replica 2 any more.
    gone = BatchSubmitter(
        "openai",
        batch_client("openai"),
        ItemStore(store, "gone-worker/lane"),
        BatchLedger(store),
        {
            "bl6": BatchModel(
                "bl6",
                fake_model_config("openai", "bl6", fake.url),
                None,
                Pricing(),
            )
        },
        owner=worker_role("openai", 2),
    )
    [record] = await gone.submit("bl6", await job_items(store, job["_id"]))
    await gone.client.aclose()
    creates = fake.batch_stats()["openai"]["creates"]
    two = _settings(settings).with_overrides(worker_replicas=2)

    # Replica 1 (2 mod 2 is 0) leaves it alone; replica 0 takes it over.
    other = make_worker(two, store, replica=1)
    await other.start()
    assert other.batch_lane is not None
    async with asyncio.timeout(_WAIT_SECONDS):
        while other.batch_lane.rounds < 3:  # noqa: ASYNC110 (a counter)
            await asyncio.sleep(0.02)
    await other.stop()
    stored = await store.raw("provider_batches").find_one({"_id": record.id})
    assert stored["owner"] == worker_role("openai", 2)

    heir = make_worker(two, store)
    await heir.start()
    done = await wait_done(store, job["_id"], _WAIT_SECONDS)
    await heir.stop()
    assert done["status"] == Status.PROCESSED
    items = await job_items(store, job["_id"])
    assert {i["result"]["via"] for i in items} == {"batch"}
    stored = await store.raw("provider_batches").find_one({"_id": record.id})
    assert stored["owner"] == worker_role("openai", 0)
    assert stored["state"] == "collected"
    # Collected, not submitted again.
    assert fake.batch_stats()["openai"]["creates"] == creates


async def test_a_deploys_successor_takes_over_the_provider_batches(
    env, fake_thread
):
    store, _, settings = env
    fake = fake_thread
    job = await submit(store, settings, fake, 3, model="bl4", mode="batch")
    fake.configure(models={"bl4": {"batch": {"durationMs": 30}}})
    # The old version's worker: its rounds sleep for an hour after the
    # first, so only the submission below reaches the provider.
    old = open_worker(
        "openai",
        0,
        settings.with_overrides(
            code_version="old", batch_submit_interval=3600
        ),
        local_sync(),
        store=store,
    )
    await old.notify_job(job)
    assert old.batch_lane is not None
    async with asyncio.timeout(_WAIT_SECONDS):
        while len(old.batch_lane.collected["bl4"]) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    collected = list(old.batch_lane.collected["bl4"].values())
    [record] = await old.batch_lane.submitter.submit("bl4", collected)
    await old.begin_drain()
    await old.drained()
    stored = await store.raw("provider_batches").find_one({"_id": record.id})
    assert stored["state"] == "submitted"

    new = open_worker(
        "openai",
        0,
        settings.with_overrides(
            code_version="new", batch_submit_interval=0.05
        ),
        local_sync(),
        store=store,
    )
    assert new.name != old.name
    await new.start()
    done = await wait_done(store, job["_id"], _WAIT_SECONDS)
    await new.stop()
    assert done["status"] == Status.PROCESSED
    stored = await store.raw("provider_batches").find_one({"_id": record.id})
    assert stored["state"] == "collected"


async def test_batch_items_fill_the_result_cache_and_are_served_from_it(
    env, fake_thread
):
    store, _, settings = env
    fake = fake_thread
    client_id = ObjectId()

    async def job_of(n):
        return await submit(
            store,
            settings,
            fake,
            n,
            model="bl5",
            mode="batch",
            cache=True,
            temperature=0,
            client_id=client_id,
            pricing=Pricing(input_per_million=1.0, output_per_million=2.0),
        )

    first = await job_of(3)
    fake.configure(models={"bl5": {"batch": {"durationMs": 50}}})
    worker = make_worker(_settings(settings), store)
    await worker.notify_job(first)
    first_done = await wait_done(store, first["_id"], _WAIT_SECONDS)
    assert first_done["cost"] > 0
    creates = fake.batch_stats()["openai"]["creates"]

    # The same requests again, plus one new: only the new one goes to a
    # provider batch; the others are answered from the cache, free.
    second = await job_of(4)
    await worker.notify_job(second)
    done = await wait_done(store, second["_id"], _WAIT_SECONDS)
    await worker.stop()

    assert done["status"] == Status.PROCESSED
    items = await job_items(store, second["_id"])
    assert [i["result"]["text"] for i in items] == [
        f"item {n}" for n in range(4)
    ]
    assert [i["result"]["cached"] for i in items] == [True] * 3 + [False]
    assert [i["result"]["cost"] for i in items[:3]] == [0.0] * 3
    assert items[3]["result"]["via"] == "batch"
    assert done["cost"] == pytest.approx(items[3]["result"]["cost"])
    assert fake.batch_stats()["openai"]["creates"] == creates + 1
    assert fake.stats("bl5")["requests"] == 0
    records = await store.raw("provider_batches").find({}).to_list()
    assert sorted(len(r["itemIds"]) for r in records) == [1, 3]
