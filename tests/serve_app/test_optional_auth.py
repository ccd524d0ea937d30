"""The optional-auth dependencies answer None instead of failing."""

from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from pipeline.settings import Settings
from serve_app.context import AppContext
from serve_app.deps import OptionalAdmin, OptionalClient
from serve_app.errors import install_error_handlers
from tests.conftest import ADMIN_KEY


@pytest.fixture
def app(service_env, db_name):
    name = db_name + "-optional"

    @asynccontextmanager
    async def lifespan(app):
        settings = Settings.from_env().with_overrides(db_name=name)
        app.state.context = await AppContext.open(settings, supervise=False)
        yield
        await app.state.context.store.client.drop_database(name)
        await app.state.context.close()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/who")
    async def who(client: OptionalClient, admin: OptionalAdmin) -> dict:
        return {
            "client": None if client is None else str(client.id),
            "admin": admin,
        }

    @app.post("/client")
    async def make_client() -> dict:
        client, issued = await app.state.context.clients.create(
            "optional", None, actor="admin"
        )
        return {"id": str(client.id), "key": issued.key}

    return app


def test_missing_or_wrong_credentials_give_none(app):
    with TestClient(app) as http:
        assert http.get("/who").json() == {"client": None, "admin": None}
        wrong = {
            "X-Admin-Key": "nope",
            "Authorization": "Bearer msk_0123456789ab_" + "x" * 40,
        }
        assert http.get("/who", headers=wrong).json() == {
            "client": None,
            "admin": None,
        }


def test_valid_credentials_are_recognised(app):
    with TestClient(app) as http:
        made = http.post("/client").json()
        admin = http.get("/who", headers={"X-Admin-Key": ADMIN_KEY}).json()
        assert admin["admin"] == "admin"
        bearer = {"Authorization": f"Bearer {made['key']}"}
        assert http.get("/who", headers=bearer).json()["client"] == made["id"]
        pair = {"X-Client-Id": made["id"], "X-Client-Key": made["key"]}
        assert http.get("/who", headers=pair).json()["client"] == made["id"]
