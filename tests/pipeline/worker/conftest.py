"""Fixtures of the in-process worker tests."""

import uuid

import pytest

from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client
from providers.fake import FakeProviderServer
from tests.support.db import host_and_port
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def fake_thread():
    with FakeProviderServer() as server:
        yield server


@pytest.fixture
async def env(mongo_uri, tmp_path):
    """A database of its own behind a proxy, and settings pointing at it."""
    host, port = host_and_port(mongo_uri)
    name = f"inproc-{uuid.uuid4().hex[:8]}"
    with TcpProxy(host, port) as proxy:
        uri = f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
        store = Store(
            create_mongo_client(uri, serverSelectionTimeoutMS=500), name
        )
        await store.ensure_indexes()
        settings = Settings.from_env(
            {"METASYNC_HOME": str(tmp_path), "POLL_INTERVAL": "1"}
        ).with_overrides(db_connection_string=uri, db_name=name)
        yield store, proxy, settings
        await store.client.drop_database(name)
        await store.close()
