"""A model's fallbacks in the catalog and in the routes of a job."""

import uuid

import pytest

from pipeline.catalog import ModelCatalog, ModelSpec
from pipeline.errors import ValidationFailed
from pipeline.jobs.fallback_routes import (
    Route,
    resolve_routes,
    routes_from_doc,
    routes_to_doc,
)
from pipeline.store import Store, create_mongo_client

pytestmark = pytest.mark.anyio

CONFIG = {"baseUrl": "http://127.0.0.1:9/v1", "modelId": "m", "auth": "none"}


def _spec(name, provider="openai", **fields):
    config = (
        CONFIG
        if provider == "openai"
        else {
            "baseUrl": "http://127.0.0.1:9",
            "modelId": "m",
            "auth": "none",
        }
    )
    return ModelSpec(name=name, provider=provider, config=config, **fields)


@pytest.fixture
async def catalog(mongo_uri):
    store = Store(
        create_mongo_client(mongo_uri), f"catalog-{uuid.uuid4().hex[:8]}"
    )
    await store.ensure_indexes()
    yield ModelCatalog(store)
    await store.client.drop_database(store.db.name)
    await store.close()


def _field(error: ValidationFailed) -> str:
    return error.errors[0]["field"]


async def test_fallbacks_must_name_other_existing_models(catalog):
    await catalog.create(_spec("b"), actor="admin")
    with pytest.raises(ValidationFailed) as unknown:
        await catalog.create(_spec("a", fallbacks=["b", "zz"]), actor="a")
    assert _field(unknown.value) == "fallbacks"
    assert "zz" in unknown.value.errors[0]["message"]
    with pytest.raises(ValidationFailed) as itself:
        await catalog.create(_spec("a", fallbacks=["a"]), actor="a")
    assert _field(itself.value) == "fallbacks"
    with pytest.raises(ValidationFailed) as twice:
        await catalog.create(_spec("a", fallbacks=["b", "b"]), actor="a")
    assert _field(twice.value) == "fallbacks"
    created = await catalog.create(_spec("a", fallbacks=["b"]), actor="a")
    assert created["fallbacks"] == ["b"]
    with pytest.raises(ValidationFailed):
        await catalog.replace("a", _spec("a", fallbacks=["zz"]), actor="a")
    assert (await catalog.get("a"))["fallbacks"] == ["b"]


async def test_a_seed_may_name_fallbacks_it_defines_later(catalog):
    added = await catalog.seed(
        [_spec("a", fallbacks=["b"]), _spec("b", fallbacks=["a"])]
    )
    assert added == 2
    with pytest.raises(ValidationFailed):
        await catalog.seed([_spec("c", fallbacks=["nowhere"])])


async def test_a_jobs_routes_name_each_fallbacks_provider(catalog):
    await catalog.seed(
        [
            _spec("b", provider="anthropic"),
            _spec("c"),
            _spec("a", fallbacks=["b", "c"]),
        ]
    )
    await catalog.delete("c", actor="admin")  # inactive: left out
    routes = await resolve_routes(catalog, {"a": ["b", "c"], "b": []})
    assert routes == {"a": (Route("b", "anthropic"),)}
    assert routes_from_doc(routes_to_doc(routes)) == routes
    assert await resolve_routes(catalog, {}) == {}
