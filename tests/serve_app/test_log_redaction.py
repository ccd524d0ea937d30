"""No secret used in a request reaches any log file of the cluster."""

import base64
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, DOCS_SECRET, PEPPER
from tests.support.api import register_client

pytestmark = pytest.mark.ray


def _session_logs() -> Path:
    import ray

    node = ray._private.worker.global_worker.node
    return Path(node.get_session_dir_path()) / "logs"


def test_secrets_never_reach_the_logs(http, admin_headers):
    creds = register_client(http, admin_headers, name="redaction")
    rotated = http.post(
        f"/admin/clients/{creds.client_id}/rotate-key", headers=admin_headers
    ).json()["apiKey"]
    fresh = {"Authorization": f"Bearer {rotated}"}
    wrong_key = "msk_0123456789ab_" + "W" * 43
    used = [ADMIN_KEY, DOCS_SECRET, PEPPER, creds.api_key, rotated, wrong_key]

    http.get("/prompts", headers=fresh)
    http.get(
        "/prompts",
        headers={"X-Client-Id": creds.client_id, "X-Client-Key": rotated},
    )
    http.get("/prompts", headers=creds.bearer)  # the old key: 401
    http.get("/prompts", headers={"Authorization": f"Bearer {wrong_key}"})
    http.get("/admin/clients", headers={"X-Admin-Key": ADMIN_KEY + "x"})
    http.get("/docs", auth=("user", DOCS_SECRET))
    http.get("/docs", auth=("user", DOCS_SECRET + "nope"))
    http.post(
        "/prompts", json={"name": rotated, "systemPrompt": "x"}, headers=fresh
    )
    http.get(f"/prompts/{rotated}", headers=fresh)
    time.sleep(1.5)  # let the replicas' log lines reach their files

    basic = base64.b64encode(f"user:{DOCS_SECRET}".encode()).decode()
    needles = [*used, basic]
    logs = _session_logs()
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert any("ServeReplica" in p.name or "serve" in str(p) for p in files)
    leaks = []
    seen_client = False
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        leaks += [(path.name, n[:12]) for n in needles if n in text]
        seen_client = seen_client or creds.client_id in text
    # The requests were logged (with their client id), without secrets.
    assert seen_client
    assert leaks == []
