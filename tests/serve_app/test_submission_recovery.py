"""A submission whose database reply is lost can be finished by a retry.

The database proxy cuts the connection once the job's insert reached the
server and before its reply: the insert is applied, the API answers 503.
"""

import uuid

import pytest
from pymongo import MongoClient
from starlette.testclient import TestClient

from pipeline.settings import Settings
from serve_app.app import create_app
from tests.support.api import register_client
from tests.support.db import host_and_port
from tests.support.tcp_proxy import TcpProxy

#: How an insert into ``jobs`` starts on the wire (BSON ``insert: "jobs"``).
JOBS_INSERT = b"\x02insert\x00\x05\x00\x00\x00jobs\x00"


@pytest.fixture
def proxied_app(mongo_uri, db_name, service_env):
    host, port = host_and_port(mongo_uri)
    name = f"{db_name}-recovery-{uuid.uuid4().hex[:6]}"
    with TcpProxy(host, port) as proxy:
        settings = Settings.from_env().with_overrides(
            db_connection_string=(
                f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
            ),
            db_name=name,
        )
        with TestClient(
            create_app(settings), raise_server_exceptions=False
        ) as client:
            yield client, proxy, name
    with MongoClient(mongo_uri) as direct:
        direct.drop_database(name)


def test_a_lost_insert_reply_is_finished_by_the_retry(
    proxied_app, service_env, mongo_uri
):
    client, proxy, name = proxied_app
    admin = {"X-Admin-Key": service_env["ADMIN_API_KEY"]}
    creds = register_client(client, admin)
    body = {
        "items": [
            {"model": "demo-openai", "userContent": f"hello {n}"}
            for n in range(30)
        ],
        "idempotencyKey": "lost-reply",
    }
    tripped = proxy.cut_before_reply(JOBS_INSERT)
    first = client.post("/jobs", json=body, headers=creds.bearer)
    assert tripped.is_set()
    assert first.status_code == 503, first.text
    proxy.restore()
    with MongoClient(mongo_uri) as direct:
        stored = direct[name]["jobs"].find_one(
            {"idempotencyKey": "lost-reply"}
        )
    assert stored is not None  # the insert was applied
    listed = client.get("/jobs", headers=creds.bearer).json()["items"]
    assert listed == []  # listings ignore an uncommitted job
    retry = client.post("/jobs", json=body, headers=creds.bearer)
    assert retry.status_code == 201, retry.text
    job = retry.json()
    assert job["id"] == str(stored["_id"])
    results = client.get(
        f"/jobs/{job['id']}/results",
        params={"limit": 100},
        headers=creds.bearer,
    ).json()["items"]
    assert len(results) == 30
    again = client.post("/jobs", json=body, headers=creds.bearer)
    assert (again.status_code, again.json()["id"]) == (200, job["id"])
