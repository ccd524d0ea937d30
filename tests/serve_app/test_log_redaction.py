"""No secret reaches any log file of the cluster, and only secrets vanish.

Each test marks its requests with an ``X-Request-ID`` and waits for the
access-log line of every one of them (written after the request is
answered) before it reads the logs: the lines that could leak are then
known to be written.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from providers.fake import fake_model_config
from tests.conftest import (
    ADMIN_KEY,
    DOCS_SECRET,
    PEPPER,
    PROVIDER_KEY,
    PROVIDER_KEY_VARIABLE,
)
from tests.support.api import (
    all_results,
    register_client,
    submit_job,
    wait_for_job,
)
from tests.support.fake_provider import unique_model
from tests.support.net import wait_until

pytestmark = pytest.mark.ray


def _session_logs() -> Path:
    import ray

    node = ray._private.worker.global_worker.node
    return Path(node.get_session_dir_path()) / "logs"


def _log_files() -> list[Path]:
    return [p for p in _session_logs().rglob("*") if p.is_file()]


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


def _lines_with(marker: str) -> list[str]:
    return [
        line
        for path in _log_files()
        for line in _read(path).splitlines()
        if marker in line
    ]


class Marked:
    """Requests tagged with request ids, to wait for their log lines."""

    def __init__(self, http) -> None:
        self.http = http
        self.ids: list[str] = []

    def __call__(self, method: str, path: str, **kwargs):
        request_id = f"redaction-{uuid.uuid4().hex}"
        self.ids.append(request_id)
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": request_id}
        return self.http.request(method, path, headers=headers, **kwargs)

    def wait_for_access_lines(self) -> None:
        """Wait until the access line of every request is in a file."""

        def all_logged() -> bool:
            text = "\n".join(_read(p) for p in _log_files())
            return all(
                f'"request_id": "{rid}"' in text
                or f'"request_id":"{rid}"' in text
                for rid in self.ids
            )

        wait_until(all_logged, timeout_s=60, what="the access log lines")


def _leaks(needles: list[str]) -> list[tuple[str, str]]:
    found = []
    for path in _log_files():
        text = _read(path)
        found += [(path.name, n[:12]) for n in needles if n in text]
    return found


def test_secrets_never_reach_the_logs(http, admin_headers):
    creds = register_client(http, admin_headers, name="redaction")
    rotated = http.post(
        f"/admin/clients/{creds.client_id}/rotate-key", headers=admin_headers
    ).json()["apiKey"]
    fresh = {"Authorization": f"Bearer {rotated}"}
    wrong_key = "msk_0123456789ab_" + "W" * 43
    used = [ADMIN_KEY, DOCS_SECRET, PEPPER, creds.api_key, rotated, wrong_key]

    marked = Marked(http)
    assert marked("GET", "/prompts", headers=fresh).status_code == 200
    marked(
        "GET",
        "/prompts",
        headers={"X-Client-Id": creds.client_id, "X-Client-Key": rotated},
    )
    assert marked("GET", "/prompts", headers=creds.bearer).status_code == 401
    marked("GET", "/prompts", headers={"Authorization": f"Bearer {wrong_key}"})
    marked("GET", "/admin/clients", headers={"X-Admin-Key": ADMIN_KEY + "x"})
    marked("GET", "/docs", auth=("user", DOCS_SECRET))
    marked("GET", "/docs", auth=("user", DOCS_SECRET + "nope"))
    marked(
        "POST",
        "/prompts",
        json={"name": rotated, "systemPrompt": "x"},
        headers=fresh,
    )
    marked("GET", f"/prompts/{rotated}", headers=fresh)
    marked.wait_for_access_lines()

    basic = base64.b64encode(f"user:{DOCS_SECRET}".encode()).decode()
    assert _leaks([*used, basic]) == []
    # The requests were logged (with their client id), without secrets.
    assert _lines_with(creds.client_id)


def test_a_failed_key_attempt_hides_no_word_of_the_callers_choice(
    http, client_a
):
    marked = Marked(http)
    admin_word = f"chosen-admin-word-{uuid.uuid4().hex[:8]}"
    client_word = f"chosen-client-word-{uuid.uuid4().hex[:8]}"
    # One request each carries the word both as a key and in its path,
    # which the access line records.
    assert (
        marked(
            "GET",
            f"/admin/clients/{admin_word}",
            headers={"X-Admin-Key": admin_word},
        ).status_code
        == 401
    )
    assert (
        marked(
            "GET",
            f"/prompts/{client_word}",
            headers={"X-Client-Key": client_word},
        ).status_code
        == 401
    )
    # A later request on the same replica finds them still visible.
    marked("GET", f"/prompts/{admin_word}", headers=client_a.headers)
    marked.wait_for_access_lines()
    assert any(
        f"/admin/clients/{admin_word}" in line
        for line in _lines_with(marked.ids[0])
    )
    assert any(
        f"/prompts/{client_word}" in line
        for line in _lines_with(marked.ids[1])
    )
    assert any(
        f"/prompts/{admin_word}" in line for line in _lines_with(marked.ids[2])
    )


def test_a_key_that_authenticated_is_redacted(http, client_a):
    marked = Marked(http)
    marked("GET", f"/prompts/{client_a.api_key}", headers=client_a.bearer)
    marked.wait_for_access_lines()
    (line,) = [
        line
        for line in _lines_with(marked.ids[0])
        if '"event": "request"' in line or '"event":"request"' in line
    ]
    assert client_a.api_key not in line
    assert "/prompts/[REDACTED]" in line
    assert _leaks([client_a.api_key]) == []


def test_a_provider_key_is_used_and_never_shown(
    http, admin_headers, fake, base_url, client_a
):
    """A model whose key is in the workers' environment, end to end."""
    import openai

    name = unique_model("keyed")
    config = fake_model_config(
        "openai",
        name,
        fake.url,
        timeoutSeconds=10,
        auth="key",
        apiKeyEnv=PROVIDER_KEY_VARIABLE,
    )
    created = http.post(
        "/admin/models",
        json={"name": name, "provider": "openai", "config": config},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    # The fake answers only that key (any other gets a 401), and fails
    # the first call once so the worker logs about a keyed call.
    fake.configure(
        {
            name: {
                "apiKey": PROVIDER_KEY,
                "faults": [{"kind": "server_error", "onCalls": [1]}],
            }
        }
    )
    job = submit_job(
        http, client_a, [{"model": name, "userContent": "keyed hello"}]
    )
    done = wait_for_job(http, client_a, job["id"], timeout_s=60)
    assert done["status"] == "PROCESSED", done
    (result,) = all_results(http, client_a, job["id"])
    assert result["result"]["text"] == "keyed hello"
    chat_request_id = f"redaction-{uuid.uuid4().hex}"
    chat = openai.OpenAI(
        base_url=f"{base_url}/v1",
        api_key=client_a.api_key,
        max_retries=0,
        default_headers={"X-Request-ID": chat_request_id},
    )
    raw = chat.chat.completions.with_raw_response.create(
        model=name, messages=[{"role": "user", "content": "keyed chat"}]
    )
    assert raw.parse().choices[0].message.content == "keyed chat"
    assert fake.stats(name)["requests"] == 3
    assert PROVIDER_KEY not in raw.http_response.text
    admin_view = http.get("/admin/models", headers=admin_headers).text
    assert PROVIDER_KEY not in admin_view
    # The worker's retry line is written before the item's result, which
    # was read above; the chat's access line is waited for.
    assert _lines_with(str(job["id"]))
    marked = Marked(http)
    marked.ids.append(chat_request_id)
    marked.wait_for_access_lines()
    assert _leaks([PROVIDER_KEY]) == []
