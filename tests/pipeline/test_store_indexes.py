"""Index shapes that every supported server accepts; cache expiry."""

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import OperationFailure

from pipeline.store import Store, create_mongo_client
from pipeline.store.database import (
    DEFAULT_CACHE_TTL_S,
    INDEXES,
    RESULT_CACHE,
    refuses_ttl_on_field,
    without_nested_fields,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(mongo_uri):
    store = Store(
        create_mongo_client(mongo_uri), f"indexes-{uuid.uuid4().hex[:8]}"
    )
    yield store
    await store.client.drop_database(store.db.name)
    await store.close()


def test_each_nested_compound_index_has_a_top_level_form():
    # Cosmos DB RU refuses compound indexes on nested fields by default:
    # those are created there without the nested fields.
    for collection, models in INDEXES.items():
        for model in models:
            keys = list(model.document["key"])
            portable = without_nested_fields(model)
            if len(keys) < 2 or all("." not in k for k in keys):
                assert portable is None
                continue
            assert portable is not None, (collection, keys)
            kept = list(portable.document["key"])
            assert kept == [k for k in keys if "." not in k]
            assert kept, (collection, keys)
            options = {
                k: v
                for k, v in model.document.items()
                if k not in ("key", "name")
            }
            assert {
                k: v
                for k, v in portable.document.items()
                if k not in ("key", "name")
            } == options


async def test_obsolete_indexes_are_dropped(store):
    live = ("_metadata.isDeleted", ASCENDING)
    await store.db["jobs"].create_indexes(
        [
            IndexModel([("status", ASCENDING)]),
            IndexModel([("clientId", ASCENDING), live, ("_id", DESCENDING)]),
        ]
    )
    await store.db["clients"].create_indexes(
        [IndexModel([live, ("createdAt", DESCENDING)])]
    )
    await store.ensure_indexes()
    jobs = set(await store.db["jobs"].index_information())
    assert "status_1" not in jobs
    assert "clientId_1__metadata.isDeleted_1__id_-1" in jobs
    clients = set(await store.db["clients"].index_information())
    assert "_metadata.isDeleted_1_createdAt_-1" not in clients


async def _cache_ttl(store) -> dict[str, int]:
    info = await store.db[RESULT_CACHE].index_information()
    return {
        name: index["expireAfterSeconds"]
        for name, index in info.items()
        if "expireAfterSeconds" in index
    }


async def test_cache_expiry_is_created_and_follows_the_setting(store):
    await store.ensure_indexes()
    assert await _cache_ttl(store) == {"createdAt_1": DEFAULT_CACHE_TTL_S}
    await store.ensure_indexes(cache_ttl_s=120)
    assert await _cache_ttl(store) == {"createdAt_1": 120}
    # A process that does not read the setting leaves it alone.
    await store.ensure_indexes()
    assert await _cache_ttl(store) == {"createdAt_1": 120}


async def test_expired_cache_entries_are_deleted_by_the_server(store):
    await store.ensure_indexes(cache_ttl_s=1)
    cache = store.raw(RESULT_CACHE)
    old = datetime(2000, 1, 1, tzinfo=UTC)
    await cache.insert_many(
        [
            {"_id": "old", "result": {}, "createdAt": old},
            {"_id": "new", "result": {}, "createdAt": datetime.now(UTC)},
        ]
    )
    # The server's TTL monitor runs about once a minute.
    deadline = time.monotonic() + 150
    while await cache.find_one({"_id": "old"}) is not None:
        assert time.monotonic() < deadline, "the expired entry stayed"
        await asyncio.sleep(0.5)


def test_cosmos_refusal_of_ttl_on_a_field_is_recognised():
    message = (
        "The 'expireAfterSeconds' option is supported on '_ts' field only."
    )
    reply = {"ok": 0.0, "errmsg": message, "code": 2, "codeName": "BadValue"}
    refused = OperationFailure(message, code=2, details=reply)
    assert refuses_ttl_on_field(refused)
    other = OperationFailure(
        "bad index key", code=67, details={"ok": 0.0, "errmsg": "bad"}
    )
    assert not refuses_ttl_on_field(other)


async def test_processes_starting_together_drop_obsolete_indexes_once(
    mongo_uri, store
):
    await store.db["jobs"].create_indexes(
        [IndexModel([("status", ASCENDING)])]
    )
    others = [
        Store(create_mongo_client(mongo_uri), store.db.name) for _ in range(3)
    ]
    try:
        await asyncio.gather(*(s.ensure_indexes() for s in [store, *others]))
    finally:
        for other in others:
            await other.close()
    assert "status_1" not in await store.db["jobs"].index_information()
