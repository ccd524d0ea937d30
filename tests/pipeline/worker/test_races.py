"""Races that lost or double-counted work, each made to happen on purpose.

Test subclasses of the worker hold one step back until another has run,
so each interleaving happens every time rather than once in a while.
"""

import asyncio

import pytest
from pymongo.errors import AutoReconnect

from pipeline.jobs.service import JobService
from pipeline.states import Status
from pipeline.worker.engine import ProviderWorker
from pipeline.worker.item_store import ItemStore, Outcome
from tests.support.flaky import FlakyCollection
from tests.support.inprocess import job_items, make_worker, submit, wait_done

pytestmark = pytest.mark.anyio


def _fail_calls(fake, model, calls, kind="bad_request", latency_ms=5):
    """Make the given calls (1-based, counted per model) fail."""
    calls = list(calls)
    faults = [{"kind": kind, "onCalls": calls}] if calls else []
    fake.configure(
        {"models": {model: {"latencyMs": latency_ms, "faults": faults}}}
    )


class _RequeueRace(ProviderWorker):
    """Reads a job's window only after the requeue sweep moved its items,
    and claims only once both have queued what they found."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.swept = asyncio.Event()
        self.window_read = asyncio.Event()
        self.claims_open = asyncio.Event()

    async def _sweep(self, track, source, target, generation=0):
        await super()._sweep(track, source, target, generation)
        self.swept.set()

    async def _read_window(self, track):
        await self.swept.wait()
        await super()._read_window(track)
        self.window_read.set()

    def _start_calls(self, name):
        if not self.claims_open.is_set():
            return 0.05
        return super()._start_calls(name)


async def test_a_requeued_item_is_queued_and_sent_once(env, fake_thread):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 3, max_attempts=1)
    _fail_calls(fake_thread, "m1", range(1, 4))
    first = make_worker(settings, store)
    await first.notify_job(job)
    failed = await wait_done(store, job["_id"])
    await first.stop()
    assert failed["counts"]["FAILED"] == 3
    calls_before = fake_thread.stats("m1")["requests"]

    _fail_calls(fake_thread, "m1", ())
    requeued = await JobService(store).requeue(str(job["_id"]))
    # A worker that starts now both sweeps the requeue and reads the
    # job's window; both find the same PENDING items.
    worker = make_worker(settings, store, cls=_RequeueRace)
    await worker.notify_job(requeued)
    await asyncio.wait_for(worker.window_read.wait(), 10)
    worker.claims_open.set()
    done = await wait_done(store, job["_id"], timeout_s=20)
    await worker.stop()

    assert done["counts"] == {"PROCESSED": 3, "FAILED": 0, "CANCELED": 0}
    assert fake_thread.stats("m1")["requests"] - calls_before == 3
    items = await job_items(store, job["_id"])
    assert [i["status"] for i in items] == ["PROCESSED"] * 3


async def test_a_claim_never_returns_an_item_twice(env, fake_thread):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 2)
    items = await job_items(store, job["_id"])
    lane = ItemStore(store, "metasync-worker-openai-0/x")
    copies = [dict(i) for i in items]
    claimed = await lane.claim(
        items + copies, "metasync-worker-openai-0/x/1", 60
    )
    assert sorted(i["_id"] for i in claimed) == [i["_id"] for i in items]


# -- counter settlement and the writer's retries ----------------------

LANE = "metasync-worker-openai-0/live"


async def _claimed(store, settings, fake, n=4, claim=2):
    """A job of ``n`` items, its first ``claim`` leased to one lane."""
    job = await submit(store, settings, fake, n)
    items = await job_items(store, job["_id"])
    lane = ItemStore(store, LANE)
    claimed = await lane.claim(items[:claim], f"{LANE}/1", 60)
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
    return job, items, lane, outcomes


async def _job_doc(store, job):
    return await store.raw("jobs").find_one({"_id": job["_id"]})


async def test_a_held_batch_is_not_settled_under_its_writer(env, fake_thread):
    store, _, settings = env
    job, items, lane, outcomes = await _claimed(store, settings, fake_thread)
    lane.items = flaky = FlakyCollection(lane.items)
    flaky.fail_next("bulk_write", applied=True)
    with pytest.raises(AutoReconnect):
        await lane.finish(outcomes, "b1")
    # Another write of the lane (a cancel sweep) while the writer still
    # holds b1, then the writer's retry of b1.
    await lane.move([items[3]], Status.PENDING, Status.CANCELED)
    report = await lane.finish(outcomes, "b1")
    assert len(report.written) == 2
    doc = await _job_doc(store, job)
    assert doc["counts"] == {"PROCESSED": 2, "FAILED": 0, "CANCELED": 1}
    assert doc["usage"] == {"inputTokens": 2, "outputTokens": 4}


async def test_settlement_does_not_undo_a_retry_that_lands(env, fake_thread):
    store, _, settings = env
    job, items, lane, outcomes = await _claimed(store, settings, fake_thread)
    lane.items = flaky_items = FlakyCollection(lane.items)
    lane.jobs = flaky_jobs = FlakyCollection(lane.jobs)
    flaky_items.fail_next("bulk_write")  # the job update went through
    with pytest.raises(AutoReconnect):
        await lane.finish(outcomes, "b1")
    # A sweep would settle b1 first: it reads the items (not written
    # yet) and is held back just before it updates the job...
    gate = flaky_jobs.gate_next("update_one")
    sweep = asyncio.create_task(
        lane.move([items[3]], Status.PENDING, Status.CANCELED)
    )
    await asyncio.wait(
        [sweep, asyncio.create_task(gate.reached.wait())],
        return_when=asyncio.FIRST_COMPLETED,
    )
    # ... while the writer's retry lands.
    report = await lane.finish(outcomes, "b1")
    gate.open()
    await sweep
    assert len(report.written) == 2
    doc = await _job_doc(store, job)
    assert doc["counts"] == {"PROCESSED": 2, "FAILED": 0, "CANCELED": 1}
    assert doc["cost"] == pytest.approx(1.0)


async def test_a_retried_partial_batch_is_counted_once(env, fake_thread):
    store, _, settings = env
    job, _, lane, outcomes = await _claimed(store, settings, fake_thread)
    # The second item's lease went to another worker: its count is
    # taken back at once; that update's reply is lost.
    await store.raw("items").update_one(
        {"_id": outcomes[1].item["_id"]}, {"$set": {"leaseOwner": "other"}}
    )
    lane.jobs = flaky = FlakyCollection(lane.jobs)
    flaky.fail_next("update_one", applied=True)
    with pytest.raises(AutoReconnect):
        await lane.finish(outcomes, "b1")
    report = await lane.finish(outcomes, "b1")
    assert [o.item["_id"] for o in report.written] == [outcomes[0].item["_id"]]
    doc = await _job_doc(store, job)
    assert doc["counts"]["PROCESSED"] == 1
    assert doc["usage"] == {"inputTokens": 1, "outputTokens": 2}


async def test_settled_entries_leave_the_journal_after_a_failure(
    env, fake_thread
):
    store, _, settings = env
    job, _, lane, outcomes = await _claimed(store, settings, fake_thread)
    await lane.finish(outcomes[:1], "b1")
    lane.jobs = flaky = FlakyCollection(lane.jobs)
    flaky.fail_next("bulk_write")  # the update that would drop b1
    with pytest.raises(AutoReconnect):
        await lane.finish(outcomes[1:], "b2")
    await lane.finish(outcomes[1:], "b2")
    flaky.fail_next("bulk_write")
    with pytest.raises(AutoReconnect):
        await lane.tidy_journal()
    await lane.tidy_journal()
    doc = await _job_doc(store, job)
    assert doc["journal"] == []
    assert doc["counts"]["PROCESSED"] == 2
