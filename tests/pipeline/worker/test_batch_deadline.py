"""Deadlines: ``auto`` jobs pick batch or live, and leave a batch in time.

A real worker (no Ray), the real database and the fake provider's batch
endpoints. An ``auto`` job goes to provider batches when its deadline
leaves the batch window and the safety margin, and runs live otherwise;
items of a job with a deadline that still sit in a provider batch when
the deadline comes near are taken back and run live. The clock the
worker measures deadlines by is moved to the deadline (the tests cannot
wait a day); every other timestamp keeps real time.
"""

import asyncio
import contextlib
from datetime import timedelta

import pytest

from pipeline.catalog import Pricing
from pipeline.states import Status
from pipeline.store.document_collection import utcnow
from pipeline.worker.provider_batches import ProviderBatchRecord
from providers.batch import batch_client
from providers.fake import fake_model_config
from tests.support.inprocess import (
    CountsReader,
    job_items,
    make_worker,
    submit,
    wait_done,
)

pytestmark = pytest.mark.anyio
_WAIT_SECONDS = 90
#: USD per million tokens, live; batch is half.
PRICING = Pricing(input_per_million=1.0, output_per_million=2.0)
FAR = timedelta(days=2)


def _settings(settings, interval=0.05):
    return settings.with_overrides(batch_submit_interval=interval)


def _live_cost(result):
    return PRICING.cost(result["inputTokens"], result["outputTokens"])


def _batch_cost(result):
    return PRICING.cost(
        result["inputTokens"], result["outputTokens"], batch=True
    )


async def _records(store, job_id):
    docs = await store.raw("provider_batches").find({}).to_list()
    return [
        ProviderBatchRecord.from_doc(d) for d in docs if job_id in d["jobIds"]
    ]


async def _submitted_record(store, job_id):
    """The job's provider batch once the vendor accepted it."""
    async with asyncio.timeout(_WAIT_SECONDS):
        while True:
            submitted = [
                r for r in await _records(store, job_id) if r.ref is not None
            ]
            if submitted:
                return submitted[0]
            await asyncio.sleep(0.05)


async def _answered_some(fake, model, record):
    """Wait until the vendor has answered some lines of a running batch."""
    client = batch_client("openai")
    config = fake_model_config("openai", model, fake.url)
    try:
        async with asyncio.timeout(_WAIT_SECONDS):
            while True:
                status = await client.poll(config, None, record.ref)
                assert not status.ended, "the batch ended before the deadline"
                if status.succeeded >= 1:
                    return status.succeeded
                await asyncio.sleep(0.1)
    finally:
        await client.aclose()


def _move_deadline_clock(worker, by):
    """Set the clock the worker's deadlines are measured by ``by`` ahead."""
    assert worker.batch_lane is not None
    worker.batch_lane.rule.clock = lambda: utcnow() + by


async def test_an_auto_job_goes_to_batches_when_its_deadline_allows(
    env, fake_thread
):
    store, _, settings = env
    fake = fake_thread
    far = await submit(
        store, settings, fake, 4, model="dl1", mode="auto", deadline=FAR
    )
    # Shorter than the 24 h window and the margin: no batch can make it.
    near = await submit(
        store,
        settings,
        fake,
        4,
        model="dl2",
        mode="auto",
        deadline=timedelta(hours=3),
    )
    fake.configure(
        models={
            "dl1": {"batch": {"durationMs": 50}},
            "dl2": {"batch": {"durationMs": 50}},
        }
    )
    worker = make_worker(_settings(settings), store)
    await worker.notify_job(far)
    await worker.notify_job(near)
    far_done = await wait_done(store, far["_id"], _WAIT_SECONDS)
    near_done = await wait_done(store, near["_id"], _WAIT_SECONDS)
    await worker.stop()

    assert far_done["status"] == near_done["status"] == Status.PROCESSED
    far_items = await job_items(store, far["_id"])
    assert {i["result"]["via"] for i in far_items} == {"batch"}
    assert fake.stats("dl1")["requests"] == 0
    assert await _records(store, far["_id"])
    near_items = await job_items(store, near["_id"])
    assert {i["result"].get("via") for i in near_items} == {None}
    assert fake.stats("dl2")["requests"] == 4
    assert await _records(store, near["_id"]) == []


@pytest.mark.parametrize("mode", ["auto", "batch"])
async def test_items_still_in_a_batch_near_the_deadline_run_live(
    env, fake_thread, mode
):
    store, _, settings = env
    fake = fake_thread
    n, model = 30, f"dl3{mode}"
    job = await submit(
        store,
        settings,
        fake,
        n,
        model=model,
        mode=mode,
        deadline=FAR,
        pricing=PRICING,
    )
    # Lines are answered one by one over the 30 s: the batch is still
    # running, some lines answered, when the deadline comes near.
    fake.configure(models={model: {"batch": {"durationMs": 30_000}}})
    cancels = fake.batch_stats().get("openai", {}).get("cancels", 0)
    worker = make_worker(_settings(settings), store)
    await worker.notify_job(job)
    record = await _submitted_record(store, job["_id"])
    assert fake.stats(model)["requests"] == 0
    await _answered_some(fake, model, record)

    reader = CountsReader(store, job["_id"])
    stop = asyncio.Event()
    reading = asyncio.create_task(reader.run(stop))
    _move_deadline_clock(worker, FAR)
    try:
        done = await wait_done(store, job["_id"], _WAIT_SECONDS)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await worker.stop()

    assert done["status"] == Status.PROCESSED
    assert done["counts"][Status.PROCESSED] == n
    items = await job_items(store, job["_id"])
    in_batch = [i for i in items if i["result"].get("via") == "batch"]
    live = [i for i in items if i["result"].get("via") is None]
    # Answers the batch gave before its cancel are kept, the rest ran
    # live: each item answered once, one attempt each.
    assert in_batch and live
    assert len(in_batch) + len(live) == n
    assert fake.stats(model)["requests"] == len(live)
    assert {i["attempts"] for i in items} == {1}
    assert [i["result"]["text"] for i in items] == [
        f"item {k}" for k in range(n)
    ]
    assert fake.batch_stats()["openai"]["cancels"] == cancels + 1
    for item in in_batch:
        assert item["result"]["cost"] == pytest.approx(
            _batch_cost(item["result"])
        )
    for item in live:
        assert item["result"]["cost"] == pytest.approx(
            _live_cost(item["result"])
        )
    assert done["cost"] == pytest.approx(
        sum(_batch_cost(i["result"]) for i in in_batch)
        + sum(_live_cost(i["result"]) for i in live)
    )
    assert reader.reads and reader.problems == []
    records = await _records(store, job["_id"])
    assert {r.state for r in records} == {"collected"}


async def test_only_the_items_whose_deadline_is_near_leave_a_shared_batch(
    env, fake_thread
):
    store, _, settings = env
    fake = fake_thread
    model = "dl4"
    # One job without a deadline, one whose deadline comes near first:
    # both in the same provider batch, which is not cancelled.
    waiting = await submit(store, settings, fake, 3, model=model, mode="batch")
    hurried = await submit(
        store, settings, fake, 3, model=model, mode="auto", deadline=FAR
    )
    fake.configure(models={model: {"batch": {"durationMs": 8_000}}})
    cancels = fake.batch_stats().get("openai", {}).get("cancels", 0)
    # Rounds an hour apart: the test runs them itself.
    worker = make_worker(_settings(settings, interval=3600), store)
    await worker.notify_job(waiting)
    await worker.notify_job(hurried)
    lane = worker.batch_lane
    assert lane is not None
    async with asyncio.timeout(_WAIT_SECONDS):
        while len(lane.collected[model]) < 6:  # noqa: ASYNC110 (a counter)
            await asyncio.sleep(0.02)
    await lane.round()
    [record] = await _records(store, waiting["_id"])
    assert set(record.job_ids) == {waiting["_id"], hurried["_id"]}
    assert record.ref is not None

    _move_deadline_clock(worker, FAR)
    await lane.round()
    hurried_done = await wait_done(store, hurried["_id"], _WAIT_SECONDS)
    assert hurried_done["status"] == Status.PROCESSED
    async with asyncio.timeout(_WAIT_SECONDS):
        while (await store.raw("jobs").find_one({"_id": waiting["_id"]}))[
            "active"
        ]:
            await lane.round()
            await asyncio.sleep(0.1)
    await worker.stop()

    hurried_items = await job_items(store, hurried["_id"])
    assert {i["result"].get("via") for i in hurried_items} == {None}
    assert {i["attempts"] for i in hurried_items} == {1}
    waiting_items = await job_items(store, waiting["_id"])
    assert {i["result"]["via"] for i in waiting_items} == {"batch"}
    assert fake.stats(model)["requests"] == 3
    assert fake.batch_stats()["openai"].get("cancels", 0) == cancels
    [stored] = await _records(store, waiting["_id"])
    assert stored.state == "collected"
