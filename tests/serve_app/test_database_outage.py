"""A database outage is a 503 (not a 500, not a hang) and heals."""

import pytest
from starlette.testclient import TestClient

from pipeline.settings import Settings
from serve_app.app import create_app
from tests.support.api import register_client
from tests.support.db import host_and_port
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def proxied_app(mongo_uri, db_name, service_env):
    host, port = host_and_port(mongo_uri)
    with TcpProxy(host, port) as proxy:
        settings = Settings.from_env().with_overrides(
            db_connection_string=(
                f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
            ),
            db_name=db_name + "-outage",
        )
        with TestClient(
            create_app(settings), raise_server_exceptions=False
        ) as client:
            yield client, proxy


def test_outage_is_503_and_recovers(proxied_app, service_env):
    client, proxy = proxied_app
    admin = {"X-Admin-Key": service_env["ADMIN_API_KEY"]}
    creds = register_client(client, admin)
    assert client.get("/prompts", headers=creds.bearer).status_code == 200

    proxy.cut()
    response = client.get("/prompts", headers=creds.bearer)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] != "ok"
    response = client.post(
        "/prompts",
        json={"name": "p", "systemPrompt": "s"},
        headers=creds.bearer,
    )
    assert response.status_code == 503

    proxy.restore()
    assert client.get("/ready").status_code == 200
    assert client.get("/prompts", headers=creds.bearer).json()["items"] == []
