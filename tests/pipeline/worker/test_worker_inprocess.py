"""The worker as a plain class (no Ray): database outages, logs, journal.

These build a :class:`ProviderWorker` directly (see
``tests/support/inprocess.py`` and this folder's ``conftest.py``).
"""

import asyncio
import io
import json

import pytest
from bson import ObjectId

from pipeline.logging import configure_logging
from pipeline.states import Status
from pipeline.worker.coordinator import LimitsCoordinator
from pipeline.worker.engine import open_worker
from pipeline.worker.item_store import ItemStore, Outcome
from tests.support.flaky import FlakyCollection
from tests.support.inprocess import (
    OPENAI_0,
    add_model,
    local_sync,
    make_worker,
    submit,
    wait_done,
)
from tests.support.net import wait_until_async

pytestmark = pytest.mark.anyio


async def test_a_database_outage_loses_nothing(env, fake_thread):
    store, proxy, settings = env
    job = await submit(store, settings, fake_thread, 120, latency_ms=30)
    worker = make_worker(settings, store)
    await worker.notify_job(job)

    async def some_written():
        items = store.raw("items")
        return await items.count_documents({"status": "PROCESSED"}) >= 20

    await wait_until_async(some_written, what="20 results written")
    log = io.StringIO()
    configure_logging("INFO", stream=log)
    try:
        proxy.cut()

        def held_unwritten():
            # The calls running at the cut ended; a write of their
            # outcomes failed, and they wait.
            return (
                '"result_write_failed"' in log.getvalue()
                and fake_thread.stats("m1")["inFlight"] == 0
                and worker.stats()["unwritten"] > 0
            )

        await wait_until_async(held_unwritten, what="a failed write")
    finally:
        proxy.restore()
        configure_logging("INFO")
    done = await wait_done(store, job["_id"])
    await worker.stop()
    assert done["counts"] == {"PROCESSED": 120, "FAILED": 0, "CANCELED": 0}
    items = await store.raw("items").find({"jobId": job["_id"]}).to_list()
    assert {i["status"] for i in items} == {"PROCESSED"}
    assert sorted(i["result"]["text"] for i in items) == sorted(
        f"item {i}" for i in range(120)
    )
    assert done["usage"]["outputTokens"] == sum(
        i["result"]["outputTokens"] for i in items
    )


async def test_item_log_lines_carry_job_and_item_ids(env, fake_thread):
    store, _, settings = env
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        fake_thread.configure(
            {
                "models": {
                    "m1": {
                        "faults": [{"kind": "server_error", "onCalls": [1]}]
                    }
                }
            }
        )
        job = await submit(store, settings, fake_thread, 3)
        fake_thread.configure(
            {
                "models": {
                    "m1": {
                        "latencyMs": 5,
                        "faults": [{"kind": "server_error", "onCalls": [1]}],
                    }
                }
            }
        )
        worker = make_worker(settings, store)
        await worker.notify_job(job)
        await wait_done(store, job["_id"])
        await worker.stop()
    finally:
        configure_logging("INFO")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    retries = [line for line in lines if line["event"] == "item_retry"]
    assert retries
    for line in retries:
        assert line["job_id"] == str(job["_id"])
        assert ObjectId.is_valid(line["item_id"])
        assert line["model"] == "m1"


async def test_a_crash_between_journal_and_item_writes_is_settled(
    env, fake_thread
):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 4)
    items = await store.raw("items").find({"jobId": job["_id"]}).to_list()
    dead = ItemStore(store, f"{OPENAI_0}/dead")
    claimed = await dead.claim(items, f"{OPENAI_0}/dead/1", 60)
    outcomes = [
        Outcome(
            item=i,
            status=Status.PROCESSED,
            result={"text": "x"},
            input_tokens=1,
            output_tokens=2,
            cost=0.5,
        )
        for i in claimed
    ]
    # The journal entry is recorded, then the "crash": items unwritten.
    dead.items = flaky = FlakyCollection(dead.items)
    gate = flaky.gate_next("bulk_write")
    write = asyncio.create_task(dead.finish(outcomes, "b-crash"))
    await asyncio.wait_for(gate.reached.wait(), 10)
    write.cancel()
    await asyncio.gather(write, return_exceptions=True)
    half = await store.raw("jobs").find_one({"_id": job["_id"]})
    assert half["counts"]["PROCESSED"] == 0  # counted once written
    assert [e["b"] for e in half["journal"]] == ["b-crash"]
    assert half["active"]

    successor = ItemStore(store, f"{OPENAI_0}/alive")
    settled = await successor.recover_journal(half, {f"{OPENAI_0}/dead"})
    assert settled == 1
    fixed = await store.raw("jobs").find_one({"_id": job["_id"]})
    assert fixed["counts"]["PROCESSED"] == 0
    assert fixed["usage"] == {"inputTokens": 0, "outputTokens": 0}
    assert fixed["cost"] == pytest.approx(0)
    assert fixed["journal"] == []

    # A restarted worker takes the dead one's leases back and finishes.
    worker = make_worker(settings, store)
    worker.incarnation = "alive"
    worker.holder = f"{worker.name}/alive"
    await worker.start()
    done = await wait_done(store, job["_id"])
    await worker.stop()
    assert done["counts"]["PROCESSED"] == 4


async def test_a_crash_between_item_and_count_writes_is_settled(
    env, fake_thread
):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 2)
    items = await store.raw("items").find({"jobId": job["_id"]}).to_list()
    dead = ItemStore(store, f"{OPENAI_0}/dead")
    claimed = await dead.claim(items, f"{OPENAI_0}/dead/1", 60)
    outcomes = [
        Outcome(item=i, status=Status.PROCESSED, result={"text": "x"})
        for i in claimed
    ]
    dead.jobs = flaky = FlakyCollection(dead.jobs)
    gate = flaky.gate_next("bulk_write", after=1)  # the counts
    write = asyncio.create_task(dead.finish(outcomes, "b-crash"))
    await asyncio.wait_for(gate.reached.wait(), 10)
    write.cancel()
    await asyncio.gather(write, return_exceptions=True)
    half = await store.raw("jobs").find_one({"_id": job["_id"]})
    assert half["counts"]["PROCESSED"] == 0
    successor = ItemStore(store, f"{OPENAI_0}/alive")
    assert await successor.recover_journal(half, {dead.lane}) == 1
    fixed = await store.raw("jobs").find_one({"_id": job["_id"]})
    assert fixed["counts"]["PROCESSED"] == 2
    assert fixed["status"] == "PROCESSED" and not fixed["active"]
    assert fixed["journal"] == []


async def test_limits_hold_across_two_workers_in_one_loop(env, fake_thread):
    store, _, settings = env
    settings = settings.with_overrides(worker_replicas=2)
    # Two windows of 500 items: each replica reads one of them.
    job = await submit(store, settings, fake_thread, 700, latency_ms=5)
    sync = local_sync(LimitsCoordinator())
    workers = [
        open_worker("openai", r, settings, sync, store=store) for r in (0, 1)
    ]
    for worker in workers:
        await worker.notify_job(job)
    done = await wait_done(store, job["_id"])
    for worker in workers:
        await worker.stop()
    assert done["counts"]["PROCESSED"] == 700
    assert fake_thread.stats("m1")["maxInFlight"] <= 4
    assert all(w.stats()["claims"] > 0 for w in workers)


async def test_expired_leases_of_another_worker_are_taken_back(
    env, fake_thread
):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 6)
    items = await store.raw("items").find({"jobId": job["_id"]}).to_list()
    gone = ItemStore(store, "metasync-worker-openai-9/gone")
    # Leased by a worker that vanished, for a second only.
    await gone.claim(items[:4], "metasync-worker-openai-9/gone/1", 1)
    worker = make_worker(settings, store)
    await worker.notify_job(job)
    done = await wait_done(store, job["_id"])
    await worker.stop()
    assert done["counts"]["PROCESSED"] == 6
    again = await store.raw("items").find({"jobId": job["_id"]}).to_list()
    assert sorted(i["attempts"] for i in again) == [1, 1, 2, 2, 2, 2]


async def test_stop_ends_loops_woken_as_they_are_cancelled(env, fake_thread):
    store, _, settings = env
    await add_model(store, fake_thread)
    worker = make_worker(settings, store)
    await worker.start()
    await asyncio.sleep(0.1)
    # On Python 3.11 asyncio.wait_for swallows a cancel that comes with
    # its awaited event: the scheduler would loop on, and stop() hang.
    worker.scheduler.wake()
    await asyncio.wait_for(worker.stop(), 10)
