"""A job's counts add up to its items at every moment a client reads them.

The client's view is what ``GET /jobs/{id}`` shows: the stored counts of
final statuses, PROCESSING as the items under a lease, PENDING as the
rest. Workers are killed (their tasks cancelled, nothing flushed, like a
SIGKILL) at chosen points of a batch and at random, and restarted as a
new incarnation, while a reader checks the view.
"""

import asyncio
import contextlib
import random

import pytest

from pipeline.states import Status
from pipeline.worker.item_store import ItemStore, Outcome
from pipeline.worker.retry import RetryPolicy
from tests.support.flaky import FlakyCollection
from tests.support.inprocess import (
    OPENAI_0,
    CountsReader,
    job_items,
    kill_worker,
    make_worker,
    submit,
    wait_done,
)

pytestmark = pytest.mark.anyio


async def test_a_writer_killed_mid_batch_leaves_consistent_counts(
    env, fake_thread
):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 4)
    reader = CountsReader(store, job["_id"])
    items = await job_items(store, job["_id"])
    dead = ItemStore(store, f"{OPENAI_0}/dead")
    claimed = await dead.claim(items, f"{OPENAI_0}/dead/1", 60)
    outcomes = [
        Outcome(item=i, status=Status.PROCESSED, result={"text": "x"})
        for i in claimed
    ]
    # The writer of the job's last batch dies before its items are
    # written.
    dead.items = flaky = FlakyCollection(dead.items)
    gate = flaky.gate_next("bulk_write")
    write = asyncio.create_task(dead.finish(outcomes, "b-last"))
    await asyncio.wait_for(gate.reached.wait(), 10)
    write.cancel()
    await asyncio.gather(write, return_exceptions=True)
    assert await reader.check() == {
        "PENDING": 0,
        "PROCESSING": 4,
        "PROCESSED": 0,
        "FAILED": 0,
        "CANCELED": 0,
    }
    assert not reader.problems

    # Its successor takes the leases back and finishes the job.
    worker = make_worker(settings, store)
    worker.incarnation = "alive"
    worker.holder = f"{worker.name}/alive"
    stop = asyncio.Event()
    reading = asyncio.create_task(reader.run(stop))
    await worker.start()
    done = await wait_done(store, job["_id"], timeout_s=30)
    await worker.stop()
    stop.set()
    await reading
    assert not reader.problems, reader.problems[:3]
    assert done["counts"] == {"PROCESSED": 4, "FAILED": 0, "CANCELED": 0}
    assert done.get("journal") == []
    items = await job_items(store, job["_id"])
    assert all(i["status"] == "PROCESSED" for i in items)
    assert [i["result"]["text"] for i in items] == [
        f"item {i}" for i in range(4)
    ]


#: Retries of the provider's simulated errors come soon, whatever the
#: attempt (every life counts one).
QUICK_RETRIES = RetryPolicy(base_delay_s=0.05, max_delay_s=0.2)

KILL_POINTS = ("random", "items write", "job write", "second job write")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_counts_add_up_across_worker_restarts(env, fake_thread, seed):
    store, _, settings = env
    rng = random.Random(seed)
    total = 80
    # Every life counts an attempt of the items it holds: allow plenty.
    job = await submit(
        store, settings, fake_thread, total, latency_ms=10, max_attempts=30
    )
    _flaky_provider(fake_thread)
    reader = CountsReader(store, job["_id"])
    stop = asyncio.Event()
    reading = asyncio.create_task(reader.run(stop))
    try:
        async with asyncio.timeout(60):
            done = await _restarts(store, settings, job, rng)
    finally:
        stop.set()
        await reading
    assert reader.reads > 50
    assert not reader.problems, reader.problems[:3]
    assert done["counts"] == {"PROCESSED": total, "FAILED": 0, "CANCELED": 0}
    items = await job_items(store, job["_id"])
    assert all(i["status"] == "PROCESSED" for i in items)
    assert done["usage"]["outputTokens"] == sum(
        i["result"]["outputTokens"] for i in items
    )


async def _restarts(store, settings, job, rng, lives=8):
    """Kill the worker ``lives`` times, then let one finish the job."""
    for life in range(lives):
        worker = make_worker(settings, store, retry_policy=QUICK_RETRIES)
        worker.incarnation = f"life{life}"
        worker.holder = f"{worker.name}/life{life}"
        await worker.start()
        gate = _gate(worker, rng.choice(KILL_POINTS))
        await worker.notify_job(job)
        reached = gate.reached.wait() if gate else asyncio.sleep(10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reached, rng.uniform(0.05, 0.5))
        await kill_worker(worker)
    last = make_worker(settings, store, retry_policy=QUICK_RETRIES)
    await last.notify_job(job)
    try:
        return await wait_done(store, job["_id"], timeout_s=30)
    finally:
        await last.stop()


def _gate(worker, point):
    """Hold the worker at a point of its next batch (None: anywhere)."""
    worker.items.items = items = FlakyCollection(worker.items.items)
    worker.items.jobs = jobs = FlakyCollection(worker.items.jobs)
    if point == "items write":
        return items.gate_next("bulk_write")
    if point == "job write":
        return jobs.gate_next("bulk_write")
    if point == "second job write":
        return jobs.gate_next("bulk_write", after=1)
    return None


def _flaky_provider(fake):
    """Some calls fail (retried), so retries mix with the restarts."""
    fake.configure(
        {
            "models": {
                "m1": {
                    "latencyMs": 10,
                    "faults": [
                        {"kind": "server_error", "everyN": 7},
                    ],
                }
            }
        }
    )
