import uuid

import pytest
from bson import ObjectId

from pipeline.errors import DatabaseUnavailable, NotFound
from pipeline.store import Store, create_mongo_client, safe_operation
from pipeline.store.database import INDEXES
from tests.support.db import host_and_port
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(mongo_uri):
    store = Store(
        create_mongo_client(mongo_uri), f"store-{uuid.uuid4().hex[:8]}"
    )
    yield store
    await store.client.drop_database(store.db.name)
    await store.close()


async def test_create_sets_metadata(store):
    docs = store.documents("things")
    created = await docs.create({"name": "a"}, actor="admin")
    meta = created["_metadata"]
    assert meta["isDeleted"] is False
    assert meta["createdBy"] == meta["updatedBy"] == "admin"
    assert meta["createdAt"] == meta["updatedAt"]
    assert meta["deletedAt"] is None and meta["deletedBy"] is None
    stored = await docs.get(created["_id"])
    assert stored == created


async def test_soft_delete_hides_from_every_read(store):
    docs = store.documents("things")
    kept = await docs.create({"name": "kept"}, actor="a")
    gone = await docs.create({"name": "gone"}, actor="a")
    assert await docs.soft_delete({"_id": gone["_id"]}, actor="client:x")
    assert [d["name"] for d in await docs.read()] == ["kept"]
    assert await docs.find_one({"name": "gone"}) is None
    with pytest.raises(NotFound):
        await docs.get(gone["_id"])
    assert await docs.update({"_id": gone["_id"]}, {"x": 1}, actor="a") is None
    assert not await docs.soft_delete({"_id": gone["_id"]}, actor="a")
    raw = await store.raw("things").find_one({"_id": gone["_id"]})
    assert raw["_metadata"]["isDeleted"] is True
    assert raw["_metadata"]["deletedBy"] == "client:x"
    assert raw["_metadata"]["deletedAt"] is not None
    assert (await docs.get(str(kept["_id"])))["name"] == "kept"


async def test_update_stamps_who_and_when(store):
    docs = store.documents("things")
    created = await docs.create({"n": 1}, actor="a")
    updated = await docs.update(
        {"_id": created["_id"]}, {"n": 2}, actor="b", extra={"$inc": {"c": 1}}
    )
    assert updated["n"] == 2 and updated["c"] == 1
    assert updated["_metadata"]["updatedBy"] == "b"
    assert updated["_metadata"]["createdBy"] == "a"
    assert (
        updated["_metadata"]["updatedAt"] >= created["_metadata"]["updatedAt"]
    )


async def test_invalid_ids_are_not_found(store):
    docs = store.documents("things")
    with pytest.raises(NotFound):
        await docs.get("not-an-id")
    with pytest.raises(NotFound):
        await docs.get(ObjectId())


async def test_indexes_are_created_idempotently(store):
    await store.ensure_indexes()
    await store.ensure_indexes()
    for collection, models in INDEXES.items():
        names = set(await store.db[collection].index_information())
        for model in models:
            assert model.document["name"] in names


async def test_safe_operation_rides_out_a_brief_outage(mongo_uri):
    host, port = host_and_port(mongo_uri)
    with TcpProxy(host, port) as proxy:
        store = Store(
            create_mongo_client(
                f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
                serverSelectionTimeoutMS=500,
            ),
            "outage",
        )
        await store.ping()
        proxy.cut()
        calls = 0

        async def operation():
            nonlocal calls
            calls += 1
            if calls == 2:
                proxy.restore()
            return await store.db.command("ping")

        result = await safe_operation(operation, attempts=4, base_delay_s=0.05)
        assert result["ok"] == 1
        assert calls >= 2
        await store.close()


async def test_safe_operation_gives_up_with_unavailable(mongo_uri):
    host, port = host_and_port(mongo_uri)
    with TcpProxy(host, port) as proxy:
        store = Store(
            create_mongo_client(
                f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
                serverSelectionTimeoutMS=300,
            ),
            "outage",
        )
        proxy.cut()
        with pytest.raises(DatabaseUnavailable):
            await safe_operation(
                lambda: store.db.command("ping"), attempts=2, base_delay_s=0.01
            )
        await store.close()
