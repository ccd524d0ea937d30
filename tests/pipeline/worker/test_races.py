"""Races that lost or double-counted work, each made to happen on purpose.

Tests wrap a step of one of the worker's parts to hold it back until
another has run, so each interleaving happens every time rather than
once in a while.
"""

import asyncio
from datetime import timedelta

import pytest
from pymongo.errors import AutoReconnect

from pipeline.jobs.service import JobService
from pipeline.jobs.shapes import job_summary
from pipeline.states import Actor, Status
from pipeline.store.document_collection import utcnow
from pipeline.worker.item_store import ItemStore, Outcome
from tests.support.flaky import FlakyCollection
from tests.support.inprocess import (
    OPENAI_0,
    job_items,
    make_worker,
    submit,
    wait_done,
)

pytestmark = pytest.mark.anyio


def _fail_calls(fake, model, calls, kind="bad_request", latency_ms=5):
    """Make the given calls (1-based, counted per model) fail."""
    calls = list(calls)
    faults = [{"kind": kind, "onCalls": calls}] if calls else []
    fake.configure(
        {"models": {model: {"latencyMs": latency_ms, "faults": faults}}}
    )


class _RequeueRace:
    """A worker that reads a job's window only after the requeue sweep
    moved its items, and claims only once both have queued what they
    found."""

    def __init__(self, worker):
        self.worker = worker
        self.swept = asyncio.Event()
        self.window_read = asyncio.Event()
        self.claims_open = asyncio.Event()
        tracker, scheduler = worker.tracker, worker.scheduler
        sweep, read_window = tracker.sweep, tracker.read_window
        start_calls = scheduler.start_calls

        async def sweep_first(track, source, target, generation=0):
            await sweep(track, source, target, generation)
            self.swept.set()

        async def read_after_sweep(track):
            await self.swept.wait()
            await read_window(track)
            self.window_read.set()

        def start_when_open(name):
            if not self.claims_open.is_set():
                return 0.05
            return start_calls(name)

        tracker.sweep = sweep_first
        tracker.read_window = read_after_sweep
        scheduler.start_calls = start_when_open


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
    race = _RequeueRace(make_worker(settings, store))
    worker = race.worker
    await worker.notify_job(requeued)
    await asyncio.wait_for(race.window_read.wait(), 10)
    race.claims_open.set()
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
    lane = ItemStore(store, f"{OPENAI_0}/x")
    copies = [dict(i) for i in items]
    claimed = await lane.claim(items + copies, f"{OPENAI_0}/x/1", 60)
    assert sorted(i["_id"] for i in claimed) == [i["_id"] for i in items]


# -- counter settlement and the writer's retries ----------------------

LANE = f"{OPENAI_0}/live"


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
    # The second item's lease went to another worker: only the first
    # is counted, by an update whose reply is lost.
    await store.raw("items").update_one(
        {"_id": outcomes[1].item["_id"]}, {"$set": {"leaseOwner": "other"}}
    )
    lane.jobs = flaky = FlakyCollection(lane.jobs)
    flaky.fail_next("bulk_write", applied=True, after=1)
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
    flaky.fail_next("bulk_write", after=1)  # b2's counts and removal
    with pytest.raises(AutoReconnect):
        await lane.finish(outcomes[1:], "b2")
    await lane.finish(outcomes[1:], "b2")
    await lane.tidy_journal()
    doc = await _job_doc(store, job)
    assert doc["journal"] == []
    assert doc["counts"]["PROCESSED"] == 2


# -- cancel while items are in flight ------------------------------------


def _gated(worker):
    """Make provider calls wait at a gate, and sweeps say how they ended.

    Sets ``call_started``, ``calls_open`` (the gate), ``swept`` and
    ``sweep_failed`` on the worker.
    """
    worker.call_started = asyncio.Event()
    worker.calls_open = asyncio.Event()
    worker.swept = asyncio.Event()
    worker.sweep_failed = asyncio.Event()
    call, sweep = worker.calls.call, worker.tracker.sweep

    async def gated_call(model, request):
        worker.call_started.set()
        await worker.calls_open.wait()
        return await call(model, request)

    async def reported_sweep(track, source, target, generation=0):
        try:
            await sweep(track, source, target, generation)
        except Exception:
            worker.sweep_failed.set()
            raise
        worker.swept.set()

    worker.calls.call = gated_call
    worker.tracker.sweep = reported_sweep
    return worker


async def _cancel(store, job):
    canceled = await JobService(store).transition(
        job["clientId"], str(job["_id"]), Status.CANCELED, Actor.CLIENT
    )
    return job_summary(canceled)


async def _wait_event(event, timeout_s=10):
    await asyncio.wait_for(event.wait(), timeout_s)


async def test_a_retry_under_a_canceled_job_is_canceled(env, fake_thread):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 1)
    _fail_calls(fake_thread, "m1", [1], kind="server_error")
    worker = _gated(make_worker(settings, store))
    await worker.notify_job(job)
    await _wait_event(worker.call_started)
    await worker.notify_job(await _cancel(store, job))
    await _wait_event(worker.swept)  # found nothing PENDING
    worker.calls_open.set()  # the call fails: a retry, under a cancel
    done = await wait_done(store, job["_id"], timeout_s=30)
    await worker.stop()
    assert done["status"] == "CANCELED"
    assert done["counts"] == {"PROCESSED": 0, "FAILED": 0, "CANCELED": 1}
    items = await job_items(store, job["_id"])
    assert [i["status"] for i in items] == ["CANCELED"]
    assert fake_thread.stats("m1")["requests"] == 1


async def test_a_lease_taken_back_under_a_cancel_is_canceled(env, fake_thread):
    store, _, settings = env
    job = await submit(store, settings, fake_thread, 2)
    items = await job_items(store, job["_id"])
    gone = ItemStore(store, "metasync-worker-openai-9/gone")
    await gone.claim(items[:1], "metasync-worker-openai-9/gone/1", 60)
    await _cancel(store, job)
    worker = _gated(make_worker(settings, store))
    await worker.start()
    await _wait_event(worker.swept)  # the second item; the first is leased
    await store.raw("items").update_one(
        {"_id": items[0]["_id"]},
        {"$set": {"leaseExpiresAt": utcnow() - timedelta(seconds=1)}},
    )
    done = await wait_done(store, job["_id"], timeout_s=30)
    await worker.stop()
    assert done["counts"] == {"PROCESSED": 0, "FAILED": 0, "CANCELED": 2}
    items = await job_items(store, job["_id"])
    assert [i["status"] for i in items] == ["CANCELED"] * 2


async def test_a_cancel_sweep_that_failed_is_retried(env, fake_thread):
    store, proxy, settings = env
    job = await submit(
        store, settings, fake_thread, 20, limits={"maxConcurrency": 1}
    )
    worker = _gated(make_worker(settings, store))
    await worker.notify_job(job)
    await _wait_event(worker.call_started)
    canceled = await _cancel(store, job)
    proxy.cut()
    try:
        await worker.notify_job(canceled)
        await _wait_event(worker.sweep_failed)
    finally:
        proxy.restore()
    worker.calls_open.set()
    done = await wait_done(store, job["_id"], timeout_s=30)
    await worker.stop()
    assert done["status"] == "CANCELED"
    counts = done["counts"]
    assert counts["PROCESSED"] == 2  # claimed before the cancel
    assert counts["CANCELED"] == 18


async def test_a_requeue_sweep_that_failed_is_retried(env, fake_thread):
    store, proxy, settings = env
    job = await submit(store, settings, fake_thread, 3, max_attempts=1)
    _fail_calls(fake_thread, "m1", range(1, 4))
    first = make_worker(settings, store)
    await first.notify_job(job)
    assert (await wait_done(store, job["_id"]))["counts"]["FAILED"] == 3
    await first.stop()

    _fail_calls(fake_thread, "m1", ())
    worker = _gated(make_worker(settings, store))
    await worker.start()
    requeued = await JobService(store).requeue(str(job["_id"]))
    proxy.cut()
    try:
        await worker.notify_job(requeued)
        await _wait_event(worker.sweep_failed)
    finally:
        proxy.restore()
    worker.calls_open.set()
    # The poll finds the job still requeued and sweeps it again.
    done = await wait_done(store, job["_id"], timeout_s=15)
    await worker.stop()
    assert done["counts"] == {"PROCESSED": 3, "FAILED": 0, "CANCELED": 0}
    items = await job_items(store, job["_id"])
    assert [i["status"] for i in items] == ["PROCESSED"] * 3


# -- leases of items held back by a rate limit ---------------------------


def _short_leases(worker):
    """Leases of two seconds (the real minimum is half a minute)."""
    worker.served.lease_seconds = lambda model: 2.0
    return worker


def _bystander(worker):
    """Claims nothing; its poll takes back leases that ran out."""
    worker.scheduler.schedule = lambda: 1.0
    return _short_leases(worker)


async def test_leases_of_held_items_are_renewed(env, fake_thread):
    store, _, settings = env
    # 1 call a second, 6 items claimed at once: the last ones wait for
    # their call longer than a lease lasts.
    job = await submit(
        store,
        settings,
        fake_thread,
        6,
        max_attempts=1,
        limits={"maxConcurrency": 4, "rpm": 60},
    )
    worker = _short_leases(make_worker(settings, store))
    bystander = _bystander(make_worker(settings, store, replica=1))
    await bystander.start()
    await worker.notify_job(job)
    done = await wait_done(store, job["_id"], timeout_s=20)
    await worker.stop()
    await bystander.stop()
    items = await job_items(store, job["_id"])
    assert [i.get("error") for i in items] == [None] * 6
    assert done["counts"] == {"PROCESSED": 6, "FAILED": 0, "CANCELED": 0}
    assert fake_thread.stats("m1")["requests"] == 6
