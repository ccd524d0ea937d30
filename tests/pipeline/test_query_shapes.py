"""Every query the code runs is registered, and every registered one is
served by an index (``explain`` shows no collection scan).

The second test records the commands the services, a worker and the
optimizer's store really send (a command listener on the driver), so a
new query shape fails here until it is registered in
``pipeline/store/query_shapes.py``, where the first test checks it has
an index.
"""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId
from pymongo import monitoring
from pymongo.errors import OperationFailure

from optimizer.runs import RunStore
from pipeline.catalog import ModelCatalog, ModelSpec
from pipeline.clients import ClientService, Quotas
from pipeline.jobs.service import JobService
from pipeline.jobs.shapes import JobOptions
from pipeline.jobs.submission import JobSubmitter
from pipeline.jobs.validation import ItemSpec
from pipeline.prompts import PromptService
from pipeline.settings import Settings
from pipeline.spending import client_spend
from pipeline.states import Actor, Status
from pipeline.store import Store, create_mongo_client
from pipeline.store.query_shapes import (
    QUERY_SHAPES,
    shape_of,
    unregistered,
)
from providers.fake import FakeProviderServer, fake_model_config
from tests.support.inprocess import add_model, make_worker, wait_done

pytestmark = pytest.mark.anyio

#: Commands that carry a filter: where it is, and where the sort is.
_FILTERS = {
    "find": ("filter", "sort"),
    "count": ("query", None),
    "distinct": ("query", None),
    "findAndModify": ("query", "sort"),
}


class QueryRecorder(monitoring.CommandListener):
    """(collection, filter, sort fields) of every command sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        name = event.command_name
        if name in _FILTERS:
            filter_key, sort_key = _FILTERS[name]
            sort = command.get(sort_key) if sort_key else None
            self._add(command[name], command.get(filter_key), sort)
        elif name == "aggregate":
            stages = command.get("pipeline") or [{}]
            self._add(command[name], stages[0].get("$match"), None)
        elif name in ("update", "delete"):
            key = "updates" if name == "update" else "deletes"
            for statement in command.get(key) or []:
                self._add(command[name], statement.get("q"), None)

    def _add(self, collection: Any, query: Any, sort: Any) -> None:
        if not isinstance(collection, str):
            return
        fields = tuple(sort or ())
        self.seen.append((collection, dict(query or {}), fields))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _stages(plan: Any) -> Iterator[str]:
    """Every stage name in an explain plan, however nested."""
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            yield plan["stage"]
        for value in plan.values():
            yield from _stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _stages(value)


@pytest.fixture
def fake_thread():
    with FakeProviderServer() as server:
        yield server


@pytest.fixture
async def recorded(mongo_uri, tmp_path):
    recorder = QueryRecorder()
    name = f"shapes-{uuid.uuid4().hex[:8]}"
    store = Store(
        create_mongo_client(mongo_uri, event_listeners=[recorder]), name
    )
    await store.ensure_indexes()
    settings = Settings.from_env(
        {"METASYNC_HOME": str(tmp_path), "POLL_INTERVAL": "1"}
    ).with_overrides(db_connection_string=mongo_uri, db_name=name)
    yield store, settings, recorder
    await store.client.drop_database(name)
    await store.close()


@pytest.mark.parametrize(
    "shape", QUERY_SHAPES, ids=lambda s: f"{s.collection}:{s.used_by}"
)
async def test_every_registered_shape_is_served_by_an_index(recorded, shape):
    store, _, _ = recorded
    collection = store.raw(shape.collection)
    # A few documents, so a planner has something to choose over (with
    # distinct values where an index is unique).
    await collection.insert_many(
        [
            {"keyPrefix": f"k{n}", "name": f"m{n}", "promptId": ObjectId()}
            for n in range(3)
        ]
    )
    cursor = collection.find(dict(shape.example))
    if shape.sort:
        cursor = cursor.sort(list(shape.sort))
    try:
        plan = await cursor.explain()
    except OperationFailure as error:
        pytest.skip(f"the server cannot explain: {error}")
    winning = (plan.get("queryPlanner") or {}).get("winningPlan")
    if winning is None:
        pytest.skip("the server's explain names no winning plan")
    stages = set(_stages(winning))
    assert "COLLSCAN" not in stages, (shape.used_by, winning)


def test_the_registry_detects_a_query_it_does_not_know():
    client = ObjectId()
    known = ("jobs", {"active": True}, ())
    by_id = ("items", {"_id": {"$in": [client]}, "status": "PENDING"}, ())
    new = ("jobs", {"model": "m", "_metadata.isDeleted": False}, ())
    assert unregistered([known, by_id]) == []
    assert unregistered([known, new]) == [("jobs", shape_of(new[1]), ())]


async def test_the_code_runs_only_registered_query_shapes(
    recorded, fake_thread
):
    store, settings, recorder = recorded
    await _exercise_clients_prompts_jobs_and_a_worker(
        store, settings, fake_thread
    )
    await _exercise_the_optimizer_store(store)
    assert recorder.seen, "the listener recorded nothing"
    collections = {collection for collection, _, _ in recorder.seen}
    assert {"clients", "prompts", "jobs", "items", "runs"} <= collections
    missing = unregistered(recorder.seen)
    assert not missing, (
        "queries without a registered shape (add them, with an index, to "
        f"pipeline/store/query_shapes.py): {missing}"
    )
    # And the registry holds no shape the code no longer runs.
    seen = {(c, shape_of(q), tuple(sort)) for c, q, sort in recorder.seen}
    stale = [s.used_by for s in QUERY_SHAPES if s.key not in seen]
    assert not stale, f"registered shapes nothing ran: {stale}"


async def _exercise_clients_prompts_jobs_and_a_worker(
    store: Store, settings: Settings, fake: FakeProviderServer
) -> None:
    clients = ClientService(store, "pepper-" + "x" * 20)
    quotas = Quotas(max_pending_items=1000, budget=10.0)
    owner, key = await clients.create("a", quotas, actor="admin")
    other, _ = await clients.create("b", None, actor="admin")
    _, cursor = await clients.list(limit=1, cursor=None)
    await clients.list(limit=1, cursor=cursor)
    await clients.authenticate(key.key)
    await clients.authenticate(key.key, str(owner.id))
    await clients.get(str(owner.id))
    await clients.update_quotas(str(owner.id), quotas, actor="admin")
    await clients.rotate_key(str(other.id), actor="admin")
    await clients.deactivate(str(other.id), actor="admin")

    await add_model(store, fake, "m1", latency_ms=5)
    catalog = ModelCatalog(store)
    await catalog.list(active_only=True)
    await catalog.list(active_only=False)
    await catalog.get("m1", active_only=True)
    await catalog.get("m1")
    await catalog.create(
        ModelSpec(
            name="m2",
            provider="openai",
            config=fake_model_config("openai", "m2", fake.url),
        ),
        actor="admin",
    )

    prompts = PromptService(store)
    fields = {"name": "p", "systemPrompt": "sys", "userTemplate": "hi {{x}}"}
    prompt = await prompts.create(owner.id, fields)
    await prompts.create(owner.id, fields)
    page = await prompts.list(owner.id, limit=1, cursor=None)
    await prompts.list(owner.id, limit=1, cursor=page.next_cursor)
    await prompts.update(owner.id, str(prompt["_id"]), fields)
    await prompts.get_version(owner.id, str(prompt["_id"]), 1)

    submitter = JobSubmitter(store, catalog, prompts, settings)
    items = [
        ItemSpec(
            model="m1",
            prompt_id=str(prompt["_id"]),
            prompt_version=1,
            variables={"x": "y"},
            temperature=0,
        ),
        ItemSpec(model="m1", user_content="hello", temperature=0),
    ]
    options = JobOptions(cache=True, idempotency_key="once")
    job, _ = await submitter.submit(owner.id, quotas, items, options)
    await submitter.submit(owner.id, quotas, items, options)
    await submitter.clean_abandoned()

    worker = make_worker(settings, store)
    await worker.notify_job(job)
    await wait_done(store, job["_id"])
    # The same requests again: answered from the result cache.
    again, _ = await submitter.submit(owner.id, quotas, items, JobOptions())
    await worker.notify_job(again)
    await wait_done(store, again["_id"])
    await worker.recovery.poll_once()  # a later poll: expired leases only
    await worker.stop()

    jobs = JobService(store)
    first = await jobs.list_jobs(owner.id, status=None, limit=1, cursor=None)
    await jobs.list_jobs(
        owner.id, status=None, limit=1, cursor=first.next_cursor
    )
    await jobs.list_jobs(
        owner.id, status=Status.PROCESSED, limit=1, cursor=None
    )
    await jobs.list_jobs(
        owner.id, status=Status.PROCESSED, limit=1, cursor=first.next_cursor
    )
    await jobs.processing_counts([job["_id"], again["_id"]])
    done = await jobs.get(owner.id, str(job["_id"]))
    await jobs.results_page(done, 0, 10, None)
    await jobs.transition(
        owner.id, str(job["_id"]), Status.CONSUMED, Actor.CLIENT
    )
    await jobs.delete(owner.id, str(again["_id"]))
    await client_spend(store, owner.id)
    await prompts.delete(owner.id, str(prompt["_id"]))


async def _exercise_the_optimizer_store(store: Store) -> None:
    runs = RunStore(store)
    client = ObjectId()
    dataset = await runs.create_dataset(
        client, "d", [{"input": "a"}], actor="client"
    )
    page = await runs.list_datasets(client, limit=1, cursor=None)
    await runs.list_datasets(client, limit=1, cursor=str(dataset["_id"]))
    run = await runs.create_run(
        {"clientId": client, "config": {"scorer": {"kind": "exact"}}},
        actor="client",
    )
    await runs.list_runs(client, limit=1, cursor=None)
    await runs.list_runs(client, limit=1, cursor=str(run["_id"]))
    await runs.get_run(client, str(run["_id"]))
    await runs.orphans("driver")
    await runs.claim(run["_id"], "driver")
    await runs.save(run["_id"], "driver", {"progress": {"cost": 0.0}})
    assert await runs.release("driver") == 1
    assert page.documents
