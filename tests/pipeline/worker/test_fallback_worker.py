"""Fallbacks in running workers (plain classes, the fake provider).

A model whose calls the fake provider always fails (``server_error``)
hands its items to its fallback: a model of the same provider (queued
by the same worker) or of another (handed to that provider's worker).
"""

import asyncio
from collections import Counter
from typing import Any

import pytest
from bson import ObjectId

from pipeline.catalog import ModelCatalog, ModelSpec
from pipeline.clients import Quotas
from pipeline.jobs.shapes import JobOptions
from pipeline.jobs.submission import JobSubmitter
from pipeline.jobs.validation import ItemSpec
from pipeline.prompts import PromptService
from pipeline.worker.coordinator import LimitsCoordinator
from pipeline.worker.engine import open_worker
from pipeline.worker.retry import RetryPolicy
from providers.fake import fake_model_config
from serve_app.schemas.jobs import ItemOut, JobOut
from tests.support.inprocess import (
    CountsReader,
    job_items,
    kill_worker,
    local_sync,
    wait_done,
)
from tests.support.net import wait_until_async

pytestmark = pytest.mark.anyio

#: Retries a few milliseconds apart: the tests wait on outcomes only.
QUICK_RETRIES = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)
DOWN = [{"kind": "server_error", "status": 503}]


async def _catalog(store, fake, models: dict[str, dict[str, Any]]) -> None:
    """Models served by the fake: name -> provider, fallbacks, faults."""
    behaviours = {}
    specs = []
    for name, spec in models.items():
        behaviours[name] = {
            "latencyMs": spec.get("latencyMs", 5),
            "faults": spec.get("faults", []),
        }
        specs.append(
            ModelSpec(
                name=name,
                provider=spec["provider"],
                config=fake_model_config(spec["provider"], name, fake.url),
                limits=spec.get("limits") or {"maxConcurrency": 4},
                fallbacks=spec.get("fallbacks", []),
            )
        )
    fake.configure({"models": behaviours})
    await ModelCatalog(store).seed(specs)


async def _submit(store, settings, n, model="m1", **options):
    submitter = JobSubmitter(
        store, ModelCatalog(store), PromptService(store), settings
    )
    job, _ = await submitter.submit(
        ObjectId(),
        Quotas(),
        [ItemSpec(model=model, user_content=f"item {i}") for i in range(n)],
        JobOptions(max_attempts=2, **options),
    )
    return job


def _worker(provider, settings, store, coordinator, **options):
    return open_worker(
        provider,
        0,
        settings,
        local_sync(coordinator),
        store=store,
        retry_policy=QUICK_RETRIES,
        seed=1,
        **options,
    )


async def _answers(store, job_id) -> Counter:
    items = await job_items(store, job_id)
    return Counter(
        i["result"]["servedBy"] for i in items if i["status"] == "PROCESSED"
    )


async def test_items_of_a_down_model_are_answered_by_its_fallback(
    env, fake_thread
):
    store, _, settings = env
    await _catalog(
        store,
        fake_thread,
        {
            "m2": {"provider": "openai"},
            "m1": {"provider": "openai", "fallbacks": ["m2"], "faults": DOWN},
        },
    )
    job = await _submit(store, settings, 20)
    worker = _worker("openai", settings, store, LimitsCoordinator())
    await worker.notify_job(job)
    done = await wait_done(store, job["_id"])
    await worker.stop()
    assert done["counts"] == {"PROCESSED": 20, "FAILED": 0, "CANCELED": 0}
    assert done["answersByModel"] == {"m2": 20}
    items = await job_items(store, job["_id"])
    for item in items:
        assert item["result"]["servedBy"] == "m2"
        assert item["requestedModel"] == "m1"
        assert item["fallbackFrom"] == ["m1"]
        assert item["attempts"] == 1  # counted again on m2
        out = ItemOut.from_doc(item)
        assert out.model == "m1" and out.result.served_by == "m2"
    # Each item used its two attempts on m1, then one on m2.
    assert fake_thread.stats("m1")["requests"] == 40
    assert fake_thread.stats("m2")["requests"] == 20
    assert JobOut.from_doc(done).answers_by_model == {"m2": 20}


async def test_another_providers_fallback_gets_the_items_on_a_signal(
    env, fake_thread
):
    store, _, settings = env
    # One poll at start-up, then none within the test: only the signal
    # can bring the items to the anthropic worker.
    settings = settings.with_overrides(poll_interval=3600)
    await _catalog(
        store,
        fake_thread,
        {
            "m2": {"provider": "anthropic", "limits": {"maxConcurrency": 2}},
            "m1": {
                "provider": "openai",
                "fallbacks": ["m2"],
                # Every other call down: answers from both models.
                "faults": [{**DOWN[0], "rate": 0.5}],
            },
        },
    )
    job = await _submit(store, settings, 60)
    assert job["providers"] == ["anthropic", "openai"]
    coordinator = LimitsCoordinator()
    receiver = _worker("anthropic", settings, store, coordinator)
    signals: list[tuple[str, int]] = []
    tasks: set[asyncio.Task] = set()

    def signal(provider: str, replica: int) -> None:
        signals.append((provider, replica))
        task = asyncio.get_running_loop().create_task(
            receiver.receive_handoffs()
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    sender = _worker(
        "openai", settings, store, coordinator, signal_handoff=signal
    )
    await receiver.notify_job(job)
    await sender.notify_job(job)
    done = await wait_done(store, job["_id"])
    await sender.stop()
    await receiver.stop()
    answers = await _answers(store, job["_id"])
    assert done["counts"] == {"PROCESSED": 60, "FAILED": 0, "CANCELED": 0}
    assert answers["m1"] > 0 and answers["m2"] > 0
    assert done["answersByModel"] == dict(answers)
    assert set(signals) == {("anthropic", 0)}
    assert fake_thread.stats("m2")["requests"] == answers["m2"]
    # m2's limit held while the anthropic worker ran the handed items.
    assert fake_thread.stats("m2")["maxInFlight"] <= 2
    inbox = await store.raw("handoffs").find_one({"_id": "anthropic/0"})
    assert inbox["items"] == []


async def test_a_lost_signal_only_waits_for_the_receivers_poll(
    env, fake_thread
):
    store, _, settings = env
    await _catalog(
        store,
        fake_thread,
        {
            "m2": {"provider": "anthropic"},
            "m1": {"provider": "openai", "fallbacks": ["m2"], "faults": DOWN},
        },
    )
    job = await _submit(store, settings, 10)
    coordinator = LimitsCoordinator()
    receiver = _worker("anthropic", settings, store, coordinator)
    sender = _worker("openai", settings, store, coordinator)  # no signal
    await receiver.notify_job(job)
    # The receiver read its windows (nothing of its models) before the
    # items move: only its inbox can bring them.
    await wait_until_async(
        lambda: receiver.backlog.jobs[job["_id"]].fully_read,
        what="the receiver read the job",
    )
    await sender.notify_job(job)
    done = await wait_done(store, job["_id"])
    await sender.stop()
    await receiver.stop()
    assert done["answersByModel"] == {"m2": 10}
    assert receiver.handoffs.received == 10


async def test_errors_about_the_request_do_not_fall_back(env, fake_thread):
    store, _, settings = env
    await _catalog(
        store,
        fake_thread,
        {
            "m2": {"provider": "openai"},
            "m1": {
                "provider": "openai",
                "fallbacks": ["m2"],
                "faults": [{"kind": "bad_request"}],
            },
        },
    )
    job = await _submit(store, settings, 5)
    worker = _worker("openai", settings, store, LimitsCoordinator())
    await worker.notify_job(job)
    done = await wait_done(store, job["_id"])
    await worker.stop()
    assert done["status"] == "FAILED"
    assert done["counts"]["FAILED"] == 5
    assert done["answersByModel"] == {}
    assert fake_thread.stats("m2")["requests"] == 0
    items = await job_items(store, job["_id"])
    assert {i["model"] for i in items} == {"m1"}
    assert {i["error"]["statusCode"] for i in items} == {400}


async def test_a_job_that_forbids_fallbacks_fails_on_its_model(
    env, fake_thread
):
    store, _, settings = env
    await _catalog(
        store,
        fake_thread,
        {
            "m2": {"provider": "anthropic"},
            "m1": {"provider": "openai", "fallbacks": ["m2"], "faults": DOWN},
        },
    )
    job = await _submit(store, settings, 5, fallbacks=False)
    assert job["providers"] == ["openai"] and job["fallbackRoutes"] == []
    worker = _worker("openai", settings, store, LimitsCoordinator())
    await worker.notify_job(job)
    done = await wait_done(store, job["_id"])
    await worker.stop()
    assert done["status"] == "FAILED" and done["counts"]["FAILED"] == 5
    assert fake_thread.stats("m2")["requests"] == 0
    items = await job_items(store, job["_id"])
    assert {i["error"]["statusCode"] for i in items} == {503}


async def test_an_item_fails_after_its_last_fallback(env, fake_thread):
    store, _, settings = env
    await _catalog(
        store,
        fake_thread,
        {
            "m3": {"provider": "openai", "faults": DOWN},
            "m2": {"provider": "openai", "faults": DOWN},
            "m1": {
                "provider": "openai",
                "fallbacks": ["m2", "m3"],
                "faults": DOWN,
            },
        },
    )
    job = await _submit(store, settings, 3)
    worker = _worker("openai", settings, store, LimitsCoordinator())
    await worker.notify_job(job)
    done = await wait_done(store, job["_id"])
    await worker.stop()
    assert done["counts"]["FAILED"] == 3
    for name in ("m1", "m2", "m3"):
        assert fake_thread.stats(name)["requests"] == 6  # 2 attempts each
    items = await job_items(store, job["_id"])
    assert {tuple(i["fallbackFrom"]) for i in items} == {("m1", "m2")}
    assert {i["model"] for i in items} == {"m3"}


class _DiesAfterRecording:
    """An inbox collection whose writer dies once its entry is recorded.

    The entry is applied; the item write that would follow never comes.
    """

    def __init__(self, collection):
        self._collection = collection
        self.recorded = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._collection, name)

    async def update_one(self, *args, **kwargs):
        result = await self._collection.update_one(*args, **kwargs)
        self.recorded.set()
        await asyncio.Event().wait()  # the worker is killed here
        return result


async def test_a_sender_killed_between_inbox_and_item_loses_nothing(
    env, fake_thread
):
    store, _, settings = env
    await _catalog(
        store,
        fake_thread,
        {
            "m2": {"provider": "anthropic"},
            # Two calls at a time, so the items give up in several writes.
            "m1": {
                "provider": "openai",
                "fallbacks": ["m2"],
                "faults": DOWN,
                "latencyMs": 50,
                "limits": {"maxConcurrency": 2},
            },
        },
    )
    total = 24
    job = await _submit(store, settings, total)
    reader = CountsReader(store, job["_id"])
    stop = asyncio.Event()
    reading = asyncio.create_task(reader.run(stop))
    coordinator = LimitsCoordinator()
    receiver = _worker("anthropic", settings, store, coordinator)
    await receiver.notify_job(job)
    first = _worker("openai", settings, store, coordinator)
    first.incarnation, first.holder = "dead", f"{first.name}/dead"
    await first.start()
    inbox = first.items.handoffs.collection = _DiesAfterRecording(
        first.items.handoffs.collection
    )
    await first.notify_job(job)
    await asyncio.wait_for(inbox.recorded.wait(), 30)
    await kill_worker(first)
    # Its successor takes its leases back at once: the items of the
    # lost write had used their attempts on m1 and fail; the others
    # move to m2.
    successor = _worker("openai", settings, store, coordinator)
    await successor.notify_job(job)
    try:
        done = await wait_done(store, job["_id"])

        async def inbox_emptied():
            doc = await store.raw("handoffs").find_one({"_id": "anthropic/0"})
            return doc is not None and doc["items"] == []

        # The lost write's entries go once their items are final.
        await wait_until_async(inbox_emptied, what="the inbox emptied")
    finally:
        await successor.stop()
        await receiver.stop()
        stop.set()
        await reading
    assert reader.reads > 10
    assert not reader.problems, reader.problems[:3]
    items = await job_items(store, job["_id"])
    processed = [i for i in items if i["status"] == "PROCESSED"]
    failed = [i for i in items if i["status"] == "FAILED"]
    assert failed and processed and len(processed) + len(failed) == total
    assert {i["error"]["type"] for i in failed} == {"lease_expired"}
    assert {i["result"]["servedBy"] for i in processed} == {"m2"}
    assert done["counts"]["PROCESSED"] == len(processed)
    assert done["answersByModel"] == {"m2": len(processed)}
    # No item was answered twice.
    assert fake_thread.stats("m2")["requests"] == len(processed)
