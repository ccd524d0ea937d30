"""A deploy of new code replaces the actors, under load, losing nothing.

Version "a" of the app is deployed (its own Serve application, database
and Ray namespace, so the session's app is untouched), a job runs
against the fake provider with latency, and version "b" is deployed
while items are in flight. Every item must end PROCESSED after exactly
one provider call and one attempt, the job's counts must add up at
every poll, and only version "b" actors may remain.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import ray
from ray import serve

from pipeline.worker.names import ActorName
from serve_app.deployment import MetasyncIngress
from tests.support.api import (
    all_results,
    create_model,
    register_client,
    submit_job,
    wait_for_job,
)
from tests.support.fake_provider import FakeProviderProcess, unique_model
from tests.support.net import wait_until

pytestmark = pytest.mark.ray

APP = "upgrade-test"
PREFIX = "/upgrade-test"
ITEMS = 120
LATENCY_MS = 250
#: While version b is deployed: version a can then finish at most 4
#: items per 5 s however slow the deploy is, so most of the job is left
#: for the hand-over and for version b.
SLOW_LATENCY_MS = 5000


def _deploy(version: str, env: dict[str, str]) -> None:
    """``serve.run`` the app with code version ``version`` (an upgrade
    when the app runs already: Serve replaces its replica)."""
    env_vars = {**env, "METASYNC_CODE_VERSION": version}
    options = {"num_cpus": 0, "runtime_env": {"env_vars": env_vars}}
    app = MetasyncIngress.options(ray_actor_options=options).bind()
    serve.run(app, name=APP, route_prefix=PREFIX)


def _actors(namespace: str) -> list[ActorName]:
    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = ActorName.parse(entry["name"])
        if entry["namespace"] == namespace and name is not None:
            found.append(name)
    return found


@pytest.fixture
def upgrade_env(
    base_url: str, mongo_uri: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """Settings of the app under test: its own database and namespace."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        "DB_NAME": f"metasync-upgrade-{suffix}",
        "RAY_NAMESPACE": f"metasync-upgrade-{suffix}",
        # No seeded catalog: the test's one model is the only provider.
        "MODELS_FILE": str(tmp_path / "no-models.yaml"),
    }
    yield env
    serve.delete(APP)
    for actor in _actors(env["RAY_NAMESPACE"]):
        ray.kill(
            ray.get_actor(actor.name, namespace=env["RAY_NAMESPACE"]),
            no_restart=True,
        )
    from pymongo import MongoClient

    with MongoClient(mongo_uri) as client:
        client.drop_database(env["DB_NAME"])


class CountsWatcher(threading.Thread):
    """Polls the job and checks that its counts add up at every poll."""

    def __init__(
        self, http: httpx2.Client, headers: dict[str, str], job_id: str
    ) -> None:
        super().__init__(daemon=True)
        self._http = http
        self._headers = headers
        self._job_id = job_id
        self.stop = threading.Event()
        self.polls = 0
        self.bad: list[dict[str, int]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            job = self._http.get(
                f"/jobs/{self._job_id}", headers=self._headers
            ).json()
            if sum(job["counts"].values()) != job["totalItems"]:
                self.bad.append(job["counts"])
            self.polls += 1
            self.stop.wait(0.05)


def test_deploy_of_new_code_drains_old_actors_without_losing_an_item(
    upgrade_env: dict[str, str],
    base_url: str,
    fake: FakeProviderProcess,
    admin_headers: dict[str, str],
) -> None:
    namespace = upgrade_env["RAY_NAMESPACE"]
    _deploy("a", upgrade_env)
    http = httpx2.Client(base_url=base_url + PREFIX, timeout=30)
    wait_until(
        lambda: http.get("/ready").status_code == 200,
        timeout_s=60,
        what="version a to be ready",
    )
    model = unique_model()
    create_model(http, admin_headers, fake.url, model, max_concurrency=4)
    fake.configure({model: {"latencyMs": LATENCY_MS}})
    client = register_client(http, admin_headers)
    job = submit_job(
        http,
        client,
        [
            {"model": model, "userContent": f"item {n}", "customId": str(n)}
            for n in range(ITEMS)
        ],
    )
    watcher = CountsWatcher(http, client.headers, str(job["id"]))
    watcher.start()

    def in_flight() -> bool:
        counts = http.get(f"/jobs/{job['id']}", headers=client.headers).json()[
            "counts"
        ]
        return counts["PROCESSED"] >= 8 and counts["PROCESSING"] > 0

    wait_until(in_flight, timeout_s=60, what="items in flight on version a")
    assert {a.version for a in _actors(namespace)} == {"a"}

    fake.configure({model: {"latencyMs": SLOW_LATENCY_MS}})
    _deploy("b", upgrade_env)
    # Version a drains: its calls end, it gives back what it had not
    # sent, and its actors are killed.
    wait_until(
        lambda: {a.version for a in _actors(namespace)} == {"b"},
        timeout_s=180,
        what="version a's actors to be retired",
    )
    fake.configure({model: {"latencyMs": LATENCY_MS}})
    done = wait_for_job(http, client, str(job["id"]), timeout_s=180)
    watcher.stop.set()
    watcher.join()

    assert done["status"] == "PROCESSED"
    assert done["counts"]["PROCESSED"] == ITEMS
    assert watcher.polls > 0 and watcher.bad == []
    results = all_results(http, client, str(job["id"]))
    assert sorted(int(r["customId"]) for r in results) == list(range(ITEMS))
    assert {r["status"] for r in results} == {"PROCESSED"}
    # Given-back items got their attempt back: one attempt, one call each.
    assert {r["attempts"] for r in results} == {1}
    assert fake.stats(model)["requests"] == ITEMS

    # Only version b's actors remain, and b's workers did part of it.
    assert {a.version for a in _actors(namespace)} == {"b"}
    workers = [a for a in _actors(namespace) if a.is_worker]
    assert workers and all(a.version == "b" for a in workers)
    processed_by_b = 0
    for worker in workers:
        handle = ray.get_actor(worker.name, namespace=namespace)
        stats = ray.get(handle.stats.remote(), timeout=30)
        processed_by_b += sum(
            count
            for key, count in stats["metrics"].items()
            if key.startswith("items:") and key.endswith(":PROCESSED")
        )
    assert 0 < processed_by_b < ITEMS
    http.close()
