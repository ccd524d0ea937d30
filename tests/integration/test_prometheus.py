"""A real Prometheus scrapes the project's metrics from a local cluster.

The scrape config is the README's: a static target on the node's
metrics export port (the session cluster runs without the dashboard,
the part of Ray that writes the service-discovery file). Prometheus (the Debian
``prometheus`` package; ``.ci/run`` installs it) runs on 127.0.0.1 with
its own storage in a temporary directory. After a job runs, its query
API must know the items counter and the latency histogram under the
names Ray exports them (``ray_`` prefix).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.api import (
    fake_model,
    register_client,
    submit_job,
    wait_for_job,
)
from tests.support.net import free_port, wait_until

pytestmark = pytest.mark.ray

ITEMS = 5


def _prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus)")
    return found


def _metrics_port() -> int:
    from serve_app.ray_metrics import local_metrics_export

    return local_metrics_export().port


@pytest.fixture
def prometheus(ray_cluster: None, tmp_path: Path) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping the session's cluster."""
    binary = _prometheus_binary()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: ray\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{_metrics_port()}']\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            assert process.poll() is None, (
                tmp_path / "prometheus.log"
            ).read_text()
            try:
                return (
                    httpx2.get(f"{url}/-/ready", timeout=2).status_code == 200
                )
            except httpx2.HTTPError:
                return False

        wait_until(ready, timeout_s=60, interval_s=0.2, what="Prometheus")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _series(prometheus: str, query: str) -> list[dict[str, object]]:
    answer = httpx2.get(
        f"{prometheus}/api/v1/query", params={"query": query}, timeout=10
    ).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def test_prometheus_finds_items_and_latency_after_a_job(
    prometheus, http, admin_headers, fake
):
    model = fake_model(http, admin_headers, fake, {"latencyMs": 20})
    client = register_client(http, admin_headers)
    job = submit_job(
        http,
        client,
        [{"model": model, "userContent": f"m {i}"} for i in range(ITEMS)],
    )
    assert wait_for_job(http, client, str(job["id"]))["status"] == "PROCESSED"

    def items_counted() -> bool:
        series = _series(
            prometheus, f'sum(ray_metasync_items_total{{model="{model}"}})'
        )
        return bool(series) and float(series[0]["value"][1]) >= ITEMS

    def latency_buckets() -> bool:
        series = _series(
            prometheus,
            f'ray_metasync_provider_latency_ms_bucket{{model="{model}"}}',
        )
        return any(s["metric"].get("le") == "+Inf" for s in series)

    # Workers push their counters twice a second, Ray's agent exports
    # them every few seconds and Prometheus scrapes every second.
    wait_until(items_counted, timeout_s=120, interval_s=1, what="items")
    wait_until(latency_buckets, timeout_s=120, interval_s=1, what="latency")
