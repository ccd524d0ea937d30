"""Races that lost or double-counted work, each made to happen on purpose.

Test subclasses of the worker hold one step back until another has run,
so each interleaving happens every time rather than once in a while.
"""

import asyncio

import pytest

from pipeline.jobs.service import JobService
from pipeline.worker.engine import ProviderWorker
from pipeline.worker.item_store import ItemStore
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
