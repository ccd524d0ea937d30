"""Run leases and statuses on the real database (no Ray)."""

import uuid
from datetime import timedelta

import pytest
from bson import ObjectId

from optimizer.runs import CANCELED, RUNNING, LeaseLost, RunStore
from pipeline.errors import InvalidTransition, NotFound
from pipeline.store import Store, create_mongo_client
from pipeline.store.document_collection import utcnow

pytestmark = pytest.mark.anyio


@pytest.fixture
async def runs(mongo_uri):
    store = Store(
        create_mongo_client(mongo_uri), f"runs-{uuid.uuid4().hex[:8]}"
    )
    await store.ensure_indexes()
    yield RunStore(store)
    await store.client.drop_database(store.db.name)
    await store.close()


async def _run(runs, client_id=None, scorer="exact"):
    return await runs.create_run(
        {
            "clientId": client_id,
            "config": {"scorer": {"kind": scorer}},
            "workingPrompts": [{"text": "p"}],
        },
        actor="test",
    )


async def test_one_driver_holds_a_run_until_its_lease_lapses(runs):
    run = await _run(runs)
    held = await runs.claim(run["_id"], "a")
    assert held["status"] == RUNNING and held["leaseOwner"] == "a"
    assert await runs.claim(run["_id"], "b") is None
    with pytest.raises(LeaseLost):
        await runs.save(run["_id"], "b", {"progress": {}})
    await runs.save(run["_id"], "a", {"progress": {"iteration": 1}})
    # "a" died: its lease lapses and "b" takes over; "a" is locked out.
    await runs.runs.collection.update_one(
        {"_id": run["_id"]},
        {"$set": {"leaseExpiresAt": utcnow() - timedelta(seconds=1)}},
    )
    assert (await runs.claim(run["_id"], "b"))["leaseOwner"] == "b"
    with pytest.raises(LeaseLost):
        await runs.renew(run["_id"], "a")


async def test_orphans_leave_python_scored_runs_to_their_driver(runs):
    plain = await _run(runs)
    scripted = await _run(runs, scorer="python")
    held = await _run(runs)
    await runs.claim(held["_id"], "someone-alive")
    orphans = await runs.orphans("optimizer")
    assert plain["_id"] in orphans
    assert scripted["_id"] not in orphans
    assert held["_id"] not in orphans
    # A driver restarted under the same name gets its runs back at once.
    assert held["_id"] in await runs.orphans("someone-alive")


async def test_cancel(runs):
    client = ObjectId()
    queued = await _run(runs, client)
    assert (await runs.request_cancel(client, str(queued["_id"]), actor="t"))[
        "status"
    ] == CANCELED
    with pytest.raises(InvalidTransition):
        await runs.request_cancel(client, str(queued["_id"]), actor="t")
    running = await _run(runs, client)
    await runs.claim(running["_id"], "a")
    asked = await runs.request_cancel(client, str(running["_id"]), actor="t")
    assert asked["status"] == RUNNING and asked["cancelRequested"]
    assert await runs.cancel_requested(running["_id"])
    with pytest.raises(NotFound):
        await runs.request_cancel(ObjectId(), str(running["_id"]), actor="t")
