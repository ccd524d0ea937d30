"""Submission against the real database: item ids, clean-up."""

import uuid
from datetime import timedelta

import pytest
from bson import ObjectId

from pipeline.catalog import ModelCatalog, ModelSpec
from pipeline.clients import Quotas
from pipeline.jobs.item_ids import item_ids, new_item_base
from pipeline.jobs.shapes import JobOptions
from pipeline.jobs.submission import JobSubmitter
from pipeline.jobs.validation import ItemSpec
from pipeline.prompts import PromptService
from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client
from pipeline.store.document_collection import utcnow
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
    assert await store.raw("ingestions").count_documents({}) == 0


async def test_an_abandoned_submission_is_removed_and_nothing_else(
    submitter,
):
    jobs, store = submitter
    items = store.raw("items")
    abandoned, other = ObjectId(), ObjectId()
    base = new_item_base()
    # The abandoned submission wrote items 0..9 of 20, then died; items
    # 10..19 belong to another job whose item base clashed.
    await items.insert_many(
        [{"_id": i, "jobId": abandoned} for i in item_ids(base, 0, 10)]
        + [{"_id": i, "jobId": other} for i in item_ids(base, 10, 20)]
    )
    await store.raw("ingestions").insert_many(
        [
            {
                "_id": abandoned,
                "itemBase": base,
                "totalItems": 20,
                "startedAt": utcnow() - timedelta(hours=1),
            },
            {  # still running: left alone
                "_id": ObjectId(),
                "itemBase": new_item_base(),
                "totalItems": 5,
                "startedAt": utcnow(),
            },
        ]
    )
    assert await jobs.clean_abandoned() == 1
    assert await items.count_documents({"jobId": abandoned}) == 0
    assert await items.count_documents({"jobId": other}) == 10
    assert await store.raw("ingestions").count_documents({}) == 1
