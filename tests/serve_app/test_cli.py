"""The command line: create-client, configuration errors, and `up`."""

import json
import os
import signal
import subprocess
import sys

import httpx2
import pytest

from tests.support.net import free_port, wait_until

PROJECT_VARIABLES = (
    "DB_CONNECTION_STRING",
    "DB_NAME",
    "ADMIN_API_KEY",
    "API_KEY_PEPPER",
    "DOCS_SECRET",
    "METASYNC_ENV",
    "METASYNC_HOME",
    "WORKER_REPLICAS",
    "POLL_INTERVAL",
)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES}
    env.update(extra)
    return env


def _cli(*args, env, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "serve_app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_configuration_errors_name_the_variable(tmp_path):
    env = _clean_env(METASYNC_ENV="production", METASYNC_HOME=str(tmp_path))
    result = _cli("admin", "create-client", "x", env=env)
    assert result.returncode == 2
    assert "ADMIN_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    env = _clean_env(POLL_INTERVAL="often", METASYNC_HOME=str(tmp_path))
    result = _cli("up", env=env)
    assert result.returncode == 2
    assert "POLL_INTERVAL" in result.stderr


@pytest.mark.ray
def test_create_client_prints_working_credentials(http, service_env):
    result = _cli("admin", "create-client", "from-cli", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["name"] == "from-cli"
    bearer = {"Authorization": f"Bearer {created['apiKey']}"}
    assert http.get("/prompts", headers=bearer).status_code == 200
    assert created["apiKey"] not in result.stderr


@pytest.mark.slow
def test_up_serves_jobs_with_no_variables_and_stops_cleanly(tmp_path):
    """The README's first command, end to end, on a second local cluster."""
    port = free_port()
    env = _clean_env(METASYNC_HOME=str(tmp_path / "state"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve_app.cli",
            "up",
            "--port",
            str(port),
            "--no-dashboard",
            "--num-cpus",
            "1",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready():
            try:
                return httpx2.get(f"{url}/ready", timeout=2).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_until(ready, timeout_s=180, interval_s=0.5, what="metasync up")
        secrets = json.loads(
            (tmp_path / "state" / "dev-secrets.json").read_text()
        )
        admin = {"X-Admin-Key": secrets["ADMIN_API_KEY"]}
        key = httpx2.post(
            f"{url}/admin/clients", json={"name": "me"}, headers=admin
        ).json()["apiKey"]
        client = {"Authorization": f"Bearer {key}"}
        job = httpx2.post(
            f"{url}/jobs",
            json={
                "items": [{"model": "demo-anthropic", "userContent": "hi up"}]
            },
            headers=client,
        ).json()

        def processed():
            state = httpx2.get(
                f"{url}/jobs/{job['id']}", headers=client
            ).json()
            return state["status"] == "PROCESSED"

        wait_until(processed, timeout_s=60, what="the demo job")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "using the embedded database" in output
    assert "development admin key" in output
    assert "metasync: stopping" in output
    # The HTTP proxy is a Ray process of its own: it goes shortly after.
    wait_until(
        lambda: not _port_open(port),
        timeout_s=30,
        what=f"port {port} to be released",
    )


def _port_open(port):
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_version_comes_from_the_package(capsys):
    from importlib.metadata import version

    from serve_app.app import create_app
    from serve_app.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"metasync {version('metasync')}"
    assert create_app().version == version("metasync")


def _ready_banner(environ):
    from pipeline.settings import Settings
    from serve_app.cli import _banner_ready
    from serve_app.launcher import LocalStack, StackOptions

    settings = Settings.from_env(environ)
    stack = LocalStack(settings, StackOptions(dashboard=False))
    return settings, _banner_ready(settings, stack, 1.0)


def test_up_prints_no_secret_the_operator_supplied(tmp_path):
    given_admin = "operator-admin-key-" + "a" * 20
    given_docs = "operator-docs-secret-" + "d" * 20
    _, banner = _ready_banner(
        {
            "METASYNC_HOME": str(tmp_path),
            "ADMIN_API_KEY": given_admin,
            "DOCS_SECRET": given_docs,
        }
    )
    assert given_admin not in banner
    assert given_docs not in banner
    assert "ADMIN_API_KEY" in banner  # says where the key comes from


def test_up_prints_the_secrets_it_generated(tmp_path):
    environ = {"METASYNC_HOME": str(tmp_path)}
    settings, banner = _ready_banner(environ)
    admin = settings.admin_api_key.get_secret_value()
    docs = settings.docs_secret.get_secret_value()
    assert admin in banner and docs in banner
    # Still its own on the next start, read back from the state file.
    again, banner = _ready_banner(environ)
    assert again.generated_secrets == ()
    assert admin in banner and docs in banner
