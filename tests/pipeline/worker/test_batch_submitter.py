"""The batch submitter on the real database and the fake provider.

Jobs are submitted as the API does; the submitter claims their items
into provider batches, polls them and writes the outcomes through the
journaled finish, so the job's counters move as for live items.
"""

import asyncio
from datetime import timedelta

import pytest
from bson import ObjectId
from pymongo import monitoring

from pipeline.catalog import Pricing
from pipeline.jobs.service import JobService
from pipeline.states import Actor, Status
from pipeline.store import Store, create_mongo_client
from pipeline.store.by_id import MAX_IDS_PER_QUERY
from pipeline.store.document_collection import utcnow
from pipeline.worker.batch_ledger import BatchLedger
from pipeline.worker.batch_submitter import BatchModel, BatchSubmitter
from pipeline.worker.item_store import ItemStore
from pipeline.worker.provider_batches import ProviderBatchRecord
from pipeline.worker.requests import item_request
from providers.batch import BatchRequest, batch_client
from providers.fake import fake_model_config
from tests.support.inprocess import job_items, submit

pytestmark = pytest.mark.anyio
LANE = "metasync-worker-openai-0/test/batches"
PRICING = Pricing(input_per_million=2.0, output_per_million=8.0)
_WAIT_SECONDS = 60


@pytest.fixture
async def parts(env, fake_thread):
    store, _, settings = env
    client = batch_client("openai")
    ledger = BatchLedger(store)
    yield store, settings, fake_thread, client, ledger
    await client.aclose()


def _submitter(parts, model):
    store, _, fake, client, ledger = parts
    models = {
        model: BatchModel(
            model, fake_model_config("openai", model, fake.url), None, PRICING
        )
    }
    return BatchSubmitter(
        "openai", client, ItemStore(store, LANE), ledger, models
    )


async def _recorded_and_claimed(submitter, ledger, items):
    """What a submitter does before it calls the vendor."""
    record = ProviderBatchRecord(
        id=ObjectId(),
        model=items[0]["model"],
        provider="openai",
        item_ids=[i["_id"] for i in items],
        created_at=submitter.clock(),
    )
    await ledger.add(record)
    claimed = await submitter.items.claim(items, record.lease_owner, 3600)
    return record, claimed


async def _until_collected(submitter, ledger):
    async with asyncio.timeout(_WAIT_SECONDS):
        while await ledger.open_records("openai"):
            await submitter.advance()
            await asyncio.sleep(0.02)


async def test_items_go_through_a_provider_batch_and_count_as_live(parts):
    store, settings, fake, _, ledger = parts
    job = await submit(store, settings, fake, 4, model="bm1", max_attempts=3)
    items = await job_items(store, job["_id"])
    ids = [str(i["_id"]) for i in items]
    fake.configure(
        models={
            "bm1": {
                "batch": {
                    "durationMs": 50,
                    "lineErrors": {"customIds": [ids[1]], "status": 429},
                }
            }
        }
    )
    before = fake.batch_stats().get("openai", {}).get("creates", 0)
    submitter = _submitter(parts, "bm1")
    records = await submitter.submit("bm1", items)
    assert [r.state for r in records] == ["submitted"]
    leased = await job_items(store, job["_id"])
    assert {i["leaseOwner"] for i in leased} == {records[0].lease_owner}
    assert {i["attempts"] for i in leased} == {1}

    await _until_collected(submitter, ledger)

    after = {str(i["_id"]): i for i in await job_items(store, job["_id"])}
    done = [after[k] for k in (ids[0], ids[2], ids[3])]
    assert {i["status"] for i in done} == {Status.PROCESSED}
    result = done[0]["result"]
    assert result["text"] == "item 0" and result["via"] == "batch"
    # "item 0": 2 tokens in and out, at half of 2.0 and 8.0 per million.
    assert result["cost"] == pytest.approx((2 * 1.0 + 2 * 4.0) / 1e6)
    retried = after[ids[1]]
    assert retried["status"] == Status.PENDING
    assert retried["attempts"] == 1
    assert retried["error"]["type"] == "rate_limited"
    assert "leaseOwner" not in retried
    stored = await store.raw("jobs").find_one({"_id": job["_id"]})
    assert stored["counts"][Status.PROCESSED] == 3
    assert stored["cost"] == pytest.approx(3 * result["cost"])
    assert fake.batch_stats()["openai"]["creates"] - before == 1


async def test_an_expired_batch_puts_unfinished_items_back_unspent(parts):
    store, settings, fake, _, ledger = parts
    job = await submit(store, settings, fake, 3, model="bm2", max_attempts=1)
    fake.configure(
        models={
            "bm2": {
                "batch": {
                    "durationMs": 30,
                    "outcome": "expired",
                    "finishedFraction": 0.0,
                }
            }
        }
    )
    submitter = _submitter(parts, "bm2")
    await submitter.submit("bm2", await job_items(store, job["_id"]))
    await _until_collected(submitter, ledger)
    items = await job_items(store, job["_id"])
    # maxAttempts is 1: had the expiry cost an attempt, they would fail.
    assert {i["status"] for i in items} == {Status.PENDING}
    assert {i["attempts"] for i in items} == {0}
    assert {i["error"]["type"] for i in items} == {"batch_not_run"}


async def test_a_batch_submitted_before_a_crash_is_not_submitted_again(parts):
    store, settings, fake, client, ledger = parts
    job = await submit(store, settings, fake, 2, model="bm3")
    fake.configure(models={"bm3": {"batch": {"durationMs": 30}}})
    items = await job_items(store, job["_id"])
    first = _submitter(parts, "bm3")
    model = first.models["bm3"]
    # The first worker records, claims and submits, then dies before it
    # can record the vendor's reference.
    record, claimed = await _recorded_and_claimed(first, ledger, items)
    await client.submit(
        model.config,
        None,
        [BatchRequest(str(i["_id"]), item_request(i)) for i in claimed],
        label=str(record.id),
    )
    creates = fake.batch_stats()["openai"]["creates"]

    successor = _submitter(parts, "bm3")
    await _until_collected(successor, ledger)
    assert fake.batch_stats()["openai"]["creates"] == creates
    done = await job_items(store, job["_id"])
    assert {i["status"] for i in done} == {Status.PROCESSED}


async def test_a_record_left_before_its_submission_is_submitted(parts):
    store, settings, fake, _, ledger = parts
    job = await submit(store, settings, fake, 2, model="bm4")
    fake.configure(models={"bm4": {"batch": {"durationMs": 30}}})
    items = await job_items(store, job["_id"])
    # The first worker records and claims, then dies before submitting.
    await _recorded_and_claimed(_submitter(parts, "bm4"), ledger, items)
    creates = fake.batch_stats().get("openai", {}).get("creates", 0)

    successor = _submitter(parts, "bm4")
    await _until_collected(successor, ledger)
    assert fake.batch_stats()["openai"]["creates"] == creates + 1
    done = await job_items(store, job["_id"])
    assert {i["status"] for i in done} == {Status.PROCESSED}


async def test_canceling_the_job_cancels_its_provider_batch(parts):
    store, settings, fake, _, ledger = parts
    job = await submit(store, settings, fake, 3, model="bm5")
    fake.configure(models={"bm5": {"batch": {"durationMs": 600_000}}})
    submitter = _submitter(parts, "bm5")
    await submitter.submit("bm5", await job_items(store, job["_id"]))
    cancels = fake.batch_stats()["openai"].get("cancels", 0)
    await JobService(store).transition(
        job["clientId"], str(job["_id"]), Status.CANCELED, Actor.CLIENT
    )
    await _until_collected(submitter, ledger)
    assert fake.batch_stats()["openai"]["cancels"] == cancels + 1
    items = await job_items(store, job["_id"])
    assert {i["status"] for i in items} == {Status.CANCELED}
    # The claim's attempt was given back: none of them ran.
    assert {i["attempts"] for i in items} == {0}
    stored = await store.raw("jobs").find_one({"_id": job["_id"]})
    assert stored["counts"][Status.CANCELED] == 3


async def test_a_submission_the_provider_refuses_for_good_fails_its_items(
    parts,
):
    store, settings, fake, client, ledger = parts
    job = await submit(store, settings, fake, 2, model="bm6", max_attempts=3)
    # A model whose key is missing: every submission would be refused
    # the same way, so retrying it each round would go on for ever.
    keyless = BatchModel(
        "bm6",
        fake_model_config("openai", "bm6", fake.url, auth="key"),
        None,
        PRICING,
    )
    submitter = BatchSubmitter(
        "openai", client, ItemStore(store, LANE), ledger, {"bm6": keyless}
    )
    records = await submitter.submit("bm6", await job_items(store, job["_id"]))
    assert [r.state for r in records] == ["collected"]
    assert not await ledger.open_records("openai")
    items = await job_items(store, job["_id"])
    assert {i["status"] for i in items} == {Status.FAILED}
    assert {i["error"]["type"] for i in items} == {"auth"}
    stored = await store.raw("jobs").find_one({"_id": job["_id"]})
    assert stored["counts"][Status.FAILED] == 2


async def test_a_provider_batch_that_keeps_failing_spends_the_attempts(parts):
    store, settings, fake, _, ledger = parts
    job = await submit(store, settings, fake, 2, model="bm7", max_attempts=2)
    fake.configure(
        models={"bm7": {"batch": {"durationMs": 20, "outcome": "failed"}}}
    )
    creates = fake.batch_stats().get("openai", {}).get("creates", 0)
    submitter = _submitter(parts, "bm7")
    # A failed batch ran none of its lines; if that gave the attempt
    # back, a batch that always fails would be submitted for ever.
    for _ in range(2):
        pending = [
            i
            for i in await job_items(store, job["_id"])
            if i["status"] == Status.PENDING
        ]
        await submitter.submit("bm7", pending)
        await _until_collected(submitter, ledger)
    items = await job_items(store, job["_id"])
    assert {i["status"] for i in items} == {Status.FAILED}
    assert {i["attempts"] for i in items} == {2}
    assert {i["error"]["type"] for i in items} == {"transient"}
    assert fake.batch_stats()["openai"]["creates"] == creates + 2


@pytest.fixture
async def anthropic_parts(env, fake_thread):
    store, _, settings = env
    client = batch_client("anthropic")
    ledger = BatchLedger(store)
    yield store, settings, fake_thread, client, ledger
    await client.aclose()


def _anthropic_submitter(parts, model):
    store, _, fake, client, ledger = parts
    config = fake_model_config("anthropic", model, fake.url)
    models = {model: BatchModel(model, config, None, PRICING)}
    return BatchSubmitter(
        "anthropic", client, ItemStore(store, LANE), ledger, models
    )


def _anthropic_calls(fake, what):
    return fake.batch_stats().get("anthropic", {}).get(what, 0)


async def _anthropic_collected(submitter, ledger):
    async with asyncio.timeout(_WAIT_SECONDS):
        while await ledger.open_records("anthropic"):
            await submitter.advance()
            await asyncio.sleep(0.02)


async def _crashed_after_claim(submitter, ledger, items):
    """An Anthropic record written and its items claimed, as a worker
    leaves them when it dies before it can store the vendor's answer."""
    record = ProviderBatchRecord(
        id=ObjectId(),
        model=items[0]["model"],
        provider="anthropic",
        item_ids=[i["_id"] for i in items],
        created_at=submitter.clock(),
    )
    await ledger.add(record)
    claimed = await submitter.items.claim(items, record.lease_owner, 3600)
    requests = [BatchRequest(str(i["_id"]), item_request(i)) for i in claimed]
    return record, requests


async def test_an_anthropic_batch_made_before_a_crash_is_not_made_again(
    anthropic_parts,
):
    store, settings, fake, client, ledger = anthropic_parts
    job = await submit(store, settings, fake, 3, model="ba1")
    fake.configure(models={"ba1": {"batch": {"durationMs": 300}}})
    first = _anthropic_submitter(anthropic_parts, "ba1")
    items = await job_items(store, job["_id"])
    _, requests = await _crashed_after_claim(first, ledger, items)
    # The vendor created the batch; its answer (the id) was lost. Message
    # batches keep no label to find it by.
    await client.submit(first.models["ba1"].config, None, requests)
    creates = _anthropic_calls(fake, "creates")

    successor = _anthropic_submitter(anthropic_parts, "ba1")
    await _anthropic_collected(successor, ledger)
    assert _anthropic_calls(fake, "creates") == creates
    assert _anthropic_calls(fake, "lists") >= 1
    done = await job_items(store, job["_id"])
    assert {i["status"] for i in done} == {Status.PROCESSED}
    assert {i["attempts"] for i in done} == {1}


async def test_an_anthropic_record_waits_for_a_batch_that_may_be_its_own(
    anthropic_parts,
):
    store, settings, fake, client, ledger = anthropic_parts
    job = await submit(store, settings, fake, 2, model="ba2")
    fake.configure(models={"ba2": {"batch": {"durationMs": 600_000}}})
    first = _anthropic_submitter(anthropic_parts, "ba2")
    items = await job_items(store, job["_id"])
    await _crashed_after_claim(first, ledger, items)
    # Another batch of as many requests, made at the same time: until it
    # ends, nothing tells whether it is the record's.
    config = first.models["ba2"].config
    other = await client.submit(
        config,
        None,
        [
            BatchRequest(f"other-{n}", item_request(item))
            for n, item in enumerate(items)
        ],
    )
    creates = _anthropic_calls(fake, "creates")
    lists = _anthropic_calls(fake, "lists")

    successor = _anthropic_submitter(anthropic_parts, "ba2")
    await successor.advance()
    assert _anthropic_calls(fake, "lists") > lists
    assert _anthropic_calls(fake, "creates") == creates
    assert [r.state for r in await ledger.open_records("anthropic")] == [
        "claimed"
    ]

    # It ends with other lines than the record's: the record is submitted.
    await client.cancel(config, None, other)
    fake.configure(models={"ba2": {"batch": {"durationMs": 30}}})
    await _anthropic_collected(successor, ledger)
    assert _anthropic_calls(fake, "creates") == creates + 1
    done = await job_items(store, job["_id"])
    assert {i["status"] for i in done} == {Status.PROCESSED}


async def test_an_anthropic_record_left_before_its_submission_is_submitted(
    anthropic_parts,
):
    store, settings, fake, _, ledger = anthropic_parts
    job = await submit(store, settings, fake, 2, model="ba3")
    fake.configure(models={"ba3": {"batch": {"durationMs": 30}}})
    first = _anthropic_submitter(anthropic_parts, "ba3")
    items = await job_items(store, job["_id"])
    await _crashed_after_claim(first, ledger, items)
    creates = _anthropic_calls(fake, "creates")

    successor = _anthropic_submitter(anthropic_parts, "ba3")
    await _anthropic_collected(successor, ledger)
    assert _anthropic_calls(fake, "creates") == creates + 1
    done = await job_items(store, job["_id"])
    assert {i["status"] for i in done} == {Status.PROCESSED}


class _ItemUpdates(monitoring.CommandListener):
    """The number of ids each ``update`` of the items addresses."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if event.command_name != "update" or command["update"] != "items":
            return
        for update in command["updates"]:
            ids = update["q"].get("_id")
            if isinstance(ids, dict) and "$in" in ids:
                self.sizes.append(len(ids["$in"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_large_batch_claims_its_items_a_few_at_a_time(parts):
    store, settings, fake, client, ledger = parts
    count = 2 * MAX_IDS_PER_QUERY + 1
    job = await submit(store, settings, fake, count, model="bm8")
    fake.configure(models={"bm8": {"batch": {"durationMs": 600_000}}})
    # One update of every item of a large batch (up to the vendor's
    # 50,000) outlasts the database's timeout: the batch never goes.
    updates = _ItemUpdates()
    watched = Store(
        create_mongo_client(
            settings.db_connection_string, event_listeners=[updates]
        ),
        settings.db_name,
    )
    try:
        config = fake_model_config("openai", "bm8", fake.url)
        submitter = BatchSubmitter(
            "openai",
            client,
            ItemStore(watched, LANE),
            ledger,
            {"bm8": BatchModel("bm8", config, None, PRICING)},
        )
        records = await submitter.submit(
            "bm8", await job_items(store, job["_id"])
        )
    finally:
        await watched.close()
    assert [(r.state, len(r.item_ids)) for r in records] == [
        ("submitted", count)
    ]
    items = await job_items(store, job["_id"])
    assert {i["leaseOwner"] for i in items} == {records[0].lease_owner}
    assert updates.sizes
    assert max(updates.sizes) <= MAX_IDS_PER_QUERY


async def test_a_batch_that_ended_before_its_job_was_canceled_is_collected(
    parts,
):
    store, settings, fake, client, _ = parts
    job = await submit(store, settings, fake, 3, model="bm8")
    fake.configure(models={"bm8": {"batch": {"durationMs": 30}}})
    submitter = _submitter(parts, "bm8")
    [record] = await submitter.submit(
        "bm8", await job_items(store, job["_id"])
    )
    config = fake_model_config("openai", "bm8", fake.url)
    async with asyncio.timeout(_WAIT_SECONDS):
        while not (await client.poll(config, None, record.ref)).ended:  # noqa: ASYNC110 (the vendor's state)
            await asyncio.sleep(0.02)
    cancels = fake.batch_stats()["openai"].get("cancels", 0)
    await JobService(store).transition(
        job["clientId"], str(job["_id"]), Status.CANCELED, Actor.CLIENT
    )
    # One round: the vendor would refuse to cancel an ended batch, so it
    # is collected instead, its answers kept.
    await submitter.advance()
    stored = await store.raw("provider_batches").find_one({"_id": record.id})
    assert stored["state"] == "collected"
    assert fake.batch_stats()["openai"].get("cancels", 0) == cancels
    items = await job_items(store, job["_id"])
    assert {i["status"] for i in items} == {Status.PROCESSED}


async def test_a_claimed_record_near_its_deadline_gives_its_items_back(parts):
    store, settings, fake, _, ledger = parts
    job = await submit(
        store,
        settings,
        fake,
        2,
        model="bm9",
        mode="auto",
        deadline=timedelta(days=2),
    )
    fake.configure(models={"bm9": {"batch": {"durationMs": 30}}})
    creates = fake.batch_stats().get("openai", {}).get("creates", 0)
    submitter = _submitter(parts, "bm9")
    items = await job_items(store, job["_id"])
    # Left claimed by a worker that died before submitting it.
    record, _ = await _recorded_and_claimed(submitter, ledger, items)
    await ledger.set_deadline(record, items[0]["deadline"])
    submitter.rule.clock = lambda: utcnow() + timedelta(days=2)

    back = await submitter.advance()

    assert sorted(o.item["_id"] for o in back) == [i["_id"] for i in items]
    after = await job_items(store, job["_id"])
    assert {(i["status"], i["attempts"]) for i in after} == {
        (Status.PENDING, 0)
    }
    assert not await ledger.open_records("openai")
    assert fake.batch_stats().get("openai", {}).get("creates", 0) == creates
