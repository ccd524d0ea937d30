"""Workers are found by name and brought back when they are gone."""

import time

import pytest
import ray

from pipeline.code_version import installed_code_version
from pipeline.worker.names import worker_name
from tests.support.api import fake_model, wait_for_job
from tests.support.net import wait_until

pytestmark = pytest.mark.ray


def test_a_worker_that_is_gone_for_good_is_recreated(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake, {"latencyMs": 5})
    actor = worker_name("openai", 1, installed_code_version())
    before = ray.get(
        ray.get_actor(actor, namespace="metasync").stats.remote(), timeout=30
    )["incarnation"]
    ray.kill(ray.get_actor(actor, namespace="metasync"), no_restart=True)

    deadline = time.monotonic() + 60
    while True:
        try:
            handle = ray.get_actor(actor, namespace="metasync")
            now = ray.get(handle.stats.remote(), timeout=10)["incarnation"]
            if now != before:
                break
        except (ValueError, ray.exceptions.RayError):
            pass
        assert time.monotonic() < deadline, "worker not recreated"
        time.sleep(0.5)
    # /ready reports the supervisor's last round (every few seconds).
    wait_until(
        lambda: http.get("/ready").json()["checks"]["workers"] == "ok",
        timeout_s=30,
        what="/ready to see the new worker",
    )
    job = http.post(
        "/jobs",
        json={
            "items": [
                {"model": name, "userContent": f"after {i}"}
                for i in range(1200)
            ]
        },
        headers=client_a.headers,
    ).json()
    done = wait_for_job(http, client_a, job["id"], timeout_s=120)
    assert done["counts"]["PROCESSED"] == 1200
