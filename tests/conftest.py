"""Session fixtures: one database, one local Ray cluster, one Serve app.

The database is the local SecantusDB server started in-process, unless
``DB_CONNECTION_STRING`` points the suite at a real MongoDB; either way
the session uses its own database name and drops it at the end. Ray is
started with the offline settings (nothing leaves the machine) and
shared by every test that needs it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.api import ClientCredentials, register_client
from tests.support.fake_provider import FakeProviderProcess
from tests.support.net import free_port, wait_until

ADMIN_KEY = "test-admin-key-" + uuid.uuid4().hex
PEPPER = "test-pepper-" + uuid.uuid4().hex
DOCS_SECRET = "test-docs-secret-" + uuid.uuid4().hex
#: A provider key in the workers' environment (the fake provider can be
#: told to require it), named as model keys must be.
PROVIDER_KEY_VARIABLE = "METASYNC_TEST_PROVIDER_KEY"
PROVIDER_KEY = "test-provider-key-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # pymongo's async client runs on asyncio only.
    return "asyncio"


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metasync-state")


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    external = os.environ.get("DB_CONNECTION_STRING")
    if external:
        yield external
        return
    from secantus import SecantusDBServer

    with SecantusDBServer(storage_path=":memory:", port=0) as server:
        yield server.uri


@pytest.fixture(scope="session")
def db_name() -> str:
    return f"metasync-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def service_env(
    mongo_uri: str, db_name: str, state_dir: Path
) -> Iterator[dict[str, str]]:
    """The environment every process of the session runs with."""
    env = {
        "METASYNC_ENV": "test",
        "METASYNC_HOME": str(state_dir),
        "DB_CONNECTION_STRING": mongo_uri,
        "DB_NAME": db_name,
        "ADMIN_API_KEY": ADMIN_KEY,
        "API_KEY_PEPPER": PEPPER,
        "DOCS_SECRET": DOCS_SECRET,
        PROVIDER_KEY_VARIABLE: PROVIDER_KEY,
        "POLL_INTERVAL": "3",
        # Batch jobs: a round of provider batches twice a second.
        "BATCH_SUBMIT_INTERVAL": "0.5",
        # Two workers per provider: every test also checks that limits
        # hold across replicas.
        "WORKER_REPLICAS": "2",
        # Ray gets 2 CPUs here (below). The session's 10 workers (5
        # providers x 2) at 0.1 CPU, their coordinator and optimizer at
        # 0.05 each: 1.1 CPUs; a deploy under test runs two versions of
        # one provider's 2 workers beside them (+0.6): 1.7 of 2.
        "WORKER_NUM_CPUS": "0.1",
    }
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    yield env
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    from pymongo import MongoClient

    with MongoClient(mongo_uri) as client:
        client.drop_database(db_name)


@pytest.fixture(scope="session")
def ray_cluster(
    service_env: dict[str, str], state_dir: Path
) -> Iterator[None]:
    import ray

    from pipeline.cluster.runtime import init_local_ray

    # Worker and replica logs stay in the Ray session directory (see
    # test_log_redaction), not on the test output.
    init_local_ray(
        state_dir, num_cpus=2, namespace="metasync-test", log_to_driver=False
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def base_url(ray_cluster: None) -> Iterator[str]:
    from ray import serve

    from serve_app.deployment import APP_NAME, build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(), name=APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx2.get(f"{url}/ready", timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    wait_until(ready, timeout_s=60, what="the app to be ready")
    yield url
    serve.shutdown()


@pytest.fixture(scope="session")
def fake(state_dir: Path) -> Iterator[FakeProviderProcess]:
    process = FakeProviderProcess(state_dir)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    return {"X-Admin-Key": ADMIN_KEY}


@pytest.fixture
def client_a(
    http: httpx2.Client, admin_headers: dict[str, str]
) -> ClientCredentials:
    return register_client(http, admin_headers)


@pytest.fixture
def client_b(
    http: httpx2.Client, admin_headers: dict[str, str]
) -> ClientCredentials:
    return register_client(http, admin_headers)
