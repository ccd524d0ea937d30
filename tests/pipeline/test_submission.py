"""Submission against the real database: item ids, clean-up."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from bson import ObjectId

from pipeline.catalog import ModelCatalog, ModelSpec
from pipeline.clients import Quotas
from pipeline.errors import QuotaExceeded
from pipeline.jobs.item_ids import item_ids, new_item_base
from pipeline.jobs.shapes import JobOptions, new_job
from pipeline.jobs.submission import JobSubmitter
from pipeline.jobs.validation import ItemSpec
from pipeline.prompts import PromptService
from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client
from pipeline.store.document_collection import utcnow
from pipeline.usage import ClientUsage, Usage
from providers.fake import fake_model_config

pytestmark = pytest.mark.anyio


@pytest.fixture
async def submitter(mongo_uri, tmp_path):
    store = Store(
        create_mongo_client(mongo_uri), f"sub-{uuid.uuid4().hex[:8]}"
    )
    await store.ensure_indexes()
    await ModelCatalog(store).seed(
        [
            ModelSpec(
                name="m",
                provider="openai",
                config=fake_model_config("openai", "m", "http://127.0.0.1:9"),
            )
        ]
    )
    settings = Settings.from_env({"METASYNC_HOME": str(tmp_path)})
    yield (
        JobSubmitter(
            store, ModelCatalog(store), PromptService(store), settings
        ),
        store,
    )
    await store.client.drop_database(store.db.name)
    await store.close()


async def test_a_jobs_items_get_consecutive_ids_in_seq_order(submitter):
    jobs, store = submitter
    specs = [ItemSpec(model="m", user_content=f"i{n}") for n in range(1203)]
    job, created = await jobs.submit(ObjectId(), Quotas(), specs, JobOptions())
    assert created
    stored = await store.raw("items").find({"jobId": job["_id"]}).to_list()
    by_id = {item["_id"]: item for item in stored}
    expected = item_ids(job["itemBase"], 0, 1203)
    assert set(by_id) == set(expected)
    assert [by_id[i]["seq"] for i in expected] == list(range(1203))
    assert [by_id[i]["userContent"] for i in expected[:2]] == ["i0", "i1"]
    assert "submitting" not in job
    assert job["active"] is True


async def test_an_abandoned_submission_is_removed_and_nothing_else(
    submitter,
):
    jobs, store = submitter
    items = store.raw("items")
    client = ObjectId()
    await store.raw("clients").insert_one({"_id": client})
    usage = ClientUsage(store.raw("clients"))
    abandoned, fresh, other = ObjectId(), ObjectId(), ObjectId()
    base = new_item_base()
    old = utcnow() - timedelta(hours=1)
    for job_id, created, item_base in (
        (abandoned, old, base),
        (fresh, utcnow(), new_item_base()),  # still running: left alone
    ):
        job = new_job(
            job_id,
            client,
            item_base,
            20,
            JobOptions(),
            ["m"],
            ["openai"],
            None,
            estimated_cost=0.5,
        )
        job["_metadata"]["createdAt"] = created
        await store.raw("jobs").insert_one(job)
        await usage.reserve(client, Quotas(), job_id, 20, 0.5)
    # The abandoned submission wrote items 0..9 of 20, then died; items
    # 10..19 belong to another job whose item base clashed.
    await items.insert_many(
        [{"_id": i, "jobId": abandoned} for i in item_ids(base, 0, 10)]
        + [{"_id": i, "jobId": other} for i in item_ids(base, 10, 20)]
    )
    assert await jobs.clean_abandoned() == 1
    assert await items.count_documents({"jobId": abandoned}) == 0
    assert await items.count_documents({"jobId": other}) == 10
    assert await store.raw("jobs").find_one({"_id": abandoned}) is None
    assert await store.raw("jobs").find_one({"_id": fresh}) is not None
    left = await usage.read(client)
    assert left.pending_items == 20
    assert left.reserved_cost == pytest.approx(0.5)


async def test_concurrent_submissions_cannot_share_the_pending_room(
    submitter,
):
    jobs, store = submitter
    client = ObjectId()
    await store.raw("clients").insert_one({"_id": client})
    quotas = Quotas(max_pending_items=10)
    specs = [ItemSpec(model="m", user_content=f"i{n}") for n in range(6)]
    outcomes = await asyncio.gather(
        *(jobs.submit(client, quotas, specs, JobOptions()) for _ in range(4)),
        return_exceptions=True,
    )
    created = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
    assert (len(created), len(refused)) == (1, 3)
    assert (await ClientUsage(store.raw("clients")).read(client)) == Usage(
        6, 0.0, 0.0
    )
    # Refused submissions leave nothing behind.
    assert await store.raw("jobs").count_documents({"clientId": client}) == 1
