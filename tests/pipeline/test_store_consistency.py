"""The store reads its own writes: majority writes, primary reads."""

import uuid

import pytest
from pymongo import ReadPreference

from pipeline.store import Store, create_mongo_client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "options", ["", "w=1&readPreference=secondaryPreferred"]
)
async def test_writes_wait_for_a_majority_and_reads_go_to_the_primary(
    mongo_uri, options
):
    uri = mongo_uri
    if options:
        separator = "&" if "?" in uri else ("?" if uri.endswith("/") else "/?")
        uri = f"{uri}{separator}{options}"
    store = Store(create_mongo_client(uri), f"wc-{uuid.uuid4().hex[:8]}")
    try:
        for collection in (store.raw("jobs"), store.documents("jobs")):
            raw = getattr(collection, "collection", collection)
            assert raw.write_concern.document == {"w": "majority"}
            assert raw.read_preference == ReadPreference.PRIMARY
        # The server accepts them (a single node or a replica set).
        created = await store.documents("jobs").create({"n": 1}, actor="t")
        assert (await store.documents("jobs").get(created["_id"]))["n"] == 1
    finally:
        await store.client.drop_database(store.db.name)
        await store.close()
