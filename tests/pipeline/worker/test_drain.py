"""A worker retired by a deploy hands its work over, losing nothing.

Two plain workers of two code versions share one job and one limits
coordinator: the old one drains while the new one runs (as
:mod:`pipeline.cluster.rollout` orders it on a deploy).
"""

import asyncio

import pytest

from pipeline.states import Status
from pipeline.store.deployed_version import DeployedVersion
from pipeline.worker.coordinator import LimitsCoordinator
from pipeline.worker.item_store import ItemStore, Outcome
from pipeline.worker.names import worker_name
from tests.support.flaky import FlakyCollection
from tests.support.inprocess import (
    job_items,
    local_sync,
    make_worker,
    submit,
    wait_done,
)

pytestmark = pytest.mark.anyio

ITEMS = 60
CONCURRENCY = 4


async def _until(condition, timeout_s=30):
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_a_draining_worker_hands_over_and_nothing_runs_twice(
    env, fake_thread
):
    store, _, settings = env
    coordinator = LimitsCoordinator()
    job = await submit(
        store,
        settings,
        fake_thread,
        ITEMS,
        latency_ms=100,
        limits={"maxConcurrency": CONCURRENCY},
    )
    old = make_worker(
        settings.with_overrides(code_version="a"), store, coordinator
    )
    await old.notify_job(job)
    # Claimed and not sent yet: those must come back with their attempt.
    await _until(lambda: any(old.scheduler.waiting.values()))

    await old.begin_drain(local_sync(coordinator))
    new = make_worker(
        settings.with_overrides(code_version="b"), store, coordinator
    )
    assert new.name != old.name
    await new.start()
    handed_over = await old.drained()
    assert handed_over
    await new.adopt(handed_over)
    done = await wait_done(store, job["_id"])
    await new.stop()

    assert done["counts"] == {"PROCESSED": ITEMS, "FAILED": 0, "CANCELED": 0}
    items = await job_items(store, job["_id"])
    assert {i["status"] for i in items} == {Status.PROCESSED}
    assert {i["attempts"] for i in items} == {1}
    stats = fake_thread.stats("m1")
    assert stats["requests"] == ITEMS
    # The old worker's last calls counted against the new one's share.
    assert stats["maxInFlight"] <= CONCURRENCY


async def test_a_worker_of_a_superseded_version_claims_nothing(
    env, fake_thread
):
    store, _, settings = env
    await DeployedVersion(store).claim("b")
    job = await submit(store, settings, fake_thread, 5)
    old = make_worker(settings.with_overrides(code_version="a"), store)
    await old.notify_job(job)
    assert old.stats()["claims"] == 0
    items = await job_items(store, job["_id"])
    assert {i["status"] for i in items} == {Status.PENDING}
    assert fake_thread.stats("m1")["requests"] == 0
    current = make_worker(settings.with_overrides(code_version="b"), store)
    await current.notify_job(job)
    done = await wait_done(store, job["_id"])
    await current.stop()
    assert done["counts"]["PROCESSED"] == 5


async def test_a_worker_killed_before_draining_is_taken_over_at_once(
    env, fake_thread
):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 4)
    items = await job_items(store, job["_id"])
    # A worker of version a held every item under a long lease and died
    # in the middle of a write: its journal entry recorded, no item
    # written.
    old_name = worker_name("openai", 0, "a")
    dead = ItemStore(store, f"{old_name}/x")
    claimed = await dead.claim(items, f"{old_name}/x/1", 3600)
    dead.items = flaky = FlakyCollection(dead.items)
    gate = flaky.gate_next("bulk_write")
    outcomes = [
        Outcome(item=i, status=Status.PROCESSED, result={"text": "x"})
        for i in claimed
    ]
    write = asyncio.create_task(dead.finish(outcomes, "b-dead"))
    await asyncio.wait_for(gate.reached.wait(), 10)
    write.cancel()
    await asyncio.gather(write, return_exceptions=True)

    new = make_worker(settings.with_overrides(code_version="b"), store)
    new.take_over([old_name])
    await new.start()
    done = await wait_done(store, job["_id"], timeout_s=30)
    await new.stop()
    assert done["counts"] == {"PROCESSED": 4, "FAILED": 0, "CANCELED": 0}
    assert done["journal"] == []
    assert fake_thread.stats("m1")["requests"] == 4
