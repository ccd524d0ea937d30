"""Ctrl-C or SIGTERM stops everything `metasync up` started within 10 s.

`up` runs as a user runs it (embedded database, the demo fake provider,
a local Ray cluster with its dashboard, Serve) in its own session. Once
it is ready, one job runs through it and a chat request is left open
(its provider call takes minutes), then the signal goes either to the
process (SIGTERM, as a service manager sends it) or to its whole process
group (SIGINT, as a terminal sends Ctrl-C: Ray's processes, the database
and the fake provider receive it too).

The slow model lives on a fake provider of the test's own (a models
file adds it), so nothing another run on this machine shares (the demo
port 8799) is reconfigured.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml

from providers.fake import fake_model_config
from serve_app.launcher import FAKE_PROVIDER_PORT
from tests.serve_app.test_cli import _clean_env, _port_open
from tests.support.fake_provider import FakeProviderProcess
from tests.support.net import free_port, wait_until
from tests.support.processes import alive, descendants

STOP_BUDGET_S = 10.0
MODEL = "slow-openai"

#: What `up` must have started (command line fragments).
EXPECTED_CHILDREN = {
    "database": "secantus",
    "GCS": "gcs_server",
    "raylet": "raylet",
}


@pytest.fixture
def own_fake(tmp_path: Path) -> Iterator[FakeProviderProcess]:
    fake = FakeProviderProcess(tmp_path)
    yield fake
    fake.stop()


def _models_file(tmp_path: Path, fake: FakeProviderProcess) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": MODEL,
                        "provider": "openai",
                        "config": fake_model_config(
                            "openai", MODEL, fake.url, timeoutSeconds=300
                        ),
                        "limits": {"maxConcurrency": 4},
                    }
                ]
            }
        )
    )
    return path


def _client_headers(url: str, state: Path) -> dict[str, str]:
    secrets = json.loads((state / "dev-secrets.json").read_text())
    admin = {"X-Admin-Key": secrets["ADMIN_API_KEY"]}
    key = httpx2.post(
        f"{url}/admin/clients", json={"name": "me"}, headers=admin, timeout=30
    ).json()["apiKey"]
    return {"Authorization": f"Bearer {key}"}


def _run_one_job(url: str, client: dict[str, str]) -> None:
    job = httpx2.post(
        f"{url}/jobs",
        json={"items": [{"model": MODEL, "userContent": "hi"}]},
        headers=client,
        timeout=30,
    ).json()

    def processed() -> bool:
        status = httpx2.get(
            f"{url}/jobs/{job['id']}", headers=client, timeout=30
        ).json()["status"]
        return status == "PROCESSED"

    wait_until(processed, timeout_s=120, interval_s=0.5, what="the job")


def _leave_a_chat_request_open(
    url: str, client: dict[str, str], fake: FakeProviderProcess
) -> None:
    """A chat request whose provider call is still running."""
    fake.configure({MODEL: {"latencyMs": 600_000}})

    def chat() -> None:
        # Cut off by the stop, by design.
        with contextlib.suppress(httpx2.HTTPError):
            httpx2.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "still there?"}],
                },
                headers=client,
                timeout=300,
            )

    threading.Thread(target=chat, daemon=True).start()
    wait_until(
        lambda: fake.stats(MODEL)["inFlight"] > 0,
        timeout_s=60,
        what="the chat call",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm", "ctrl-c"],
)
def test_up_stops_everything_it_started_within_budget(
    tmp_path: Path, own_fake: FakeProviderProcess, signum: int, to_group: bool
) -> None:
    port = free_port()
    metrics_port = free_port()
    state = tmp_path / "state"
    expected = dict(EXPECTED_CHILDREN)
    # `up` reuses a demo fake provider another run already serves.
    if not _port_open(FAKE_PROVIDER_PORT):
        expected["fake provider"] = "providers.fake"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve_app.cli",
            "up",
            "--port",
            str(port),
            "--dashboard-port",
            str(free_port()),
            "--metrics-port",
            str(metrics_port),
        ],
        env=_clean_env(
            METASYNC_HOME=str(state),
            MODELS_FILE=str(_models_file(tmp_path, own_fake)),
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx2.get(f"{url}/ready", timeout=2).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_until(ready, timeout_s=240, interval_s=0.5, what="metasync up")
        # The README's scrape target: Ray's exporter on the chosen port.
        metrics = httpx2.get(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=30
        )
        assert metrics.status_code == 200
        assert "ray_" in metrics.text
        client = _client_headers(url, state)
        _run_one_job(url, client)
        _leave_a_chat_request_open(url, client, own_fake)
        started = descendants(process.pid)
        for part, fragment in expected.items():
            assert any(fragment in command for command in started.values()), (
                f"no {part} among {sorted(started.values())}"
            )
        sent = time.monotonic()
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        process.wait(timeout=120)

        def survivors() -> list[str]:
            return [cmd for pid, cmd in started.items() if alive(pid, cmd)]

        left_at_budget: list[str] = []
        while survivors():
            if not left_at_budget and time.monotonic() > sent + STOP_BUDGET_S:
                left_at_budget = survivors()
            assert time.monotonic() < sent + 120, survivors()
            time.sleep(0.05)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = process.stdout.read() if process.stdout else ""
    how = signal.strsignal(signum)
    print(f"metasync up stopped in {took:.1f}s after {how}")
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert "failed to shut down" not in output
    assert took <= STOP_BUDGET_S, (left_at_budget, output)
