"""Helpers for driving the HTTP API in tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx2

from tests.support.fake_provider import FakeProviderProcess, unique_model


@dataclass(frozen=True)
class ClientCredentials:
    """A client registered through the admin API."""

    client_id: str
    api_key: str
    name: str

    @property
    def headers(self) -> dict[str, str]:
        """The ``X-Client-Id`` + ``X-Client-Key`` pair."""
        return {"X-Client-Id": self.client_id, "X-Client-Key": self.api_key}

    @property
    def bearer(self) -> dict[str, str]:
        """The ``Authorization: Bearer`` form."""
        return {"Authorization": f"Bearer {self.api_key}"}


def register_client(
    http: httpx2.Client,
    admin_headers: dict[str, str],
    name: str | None = None,
    **quotas: int | float,
) -> ClientCredentials:
    """Create a client through ``POST /admin/clients``."""
    body: dict[str, object] = {
        "name": name or f"client-{uuid.uuid4().hex[:6]}"
    }
    if quotas:
        body["quotas"] = quotas
    response = http.post("/admin/clients", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    data = response.json()
    return ClientCredentials(data["clientId"], data["apiKey"], data["name"])


def fake_model(
    http: httpx2.Client,
    admin_headers: dict[str, str],
    fake: FakeProviderProcess,
    behaviour: dict[str, object] | None = None,
    **options: Any,
) -> str:
    """A new catalog model on the fake provider, behaving as told there.

    ``options`` go to :func:`create_model`; returns the model's name.
    """
    name = unique_model()
    create_model(http, admin_headers, fake.url, name, **options)
    if behaviour:
        fake.configure({name: behaviour})
    return name


def create_model(
    http: httpx2.Client,
    admin_headers: dict[str, str],
    fake_url: str,
    name: str,
    *,
    provider: str = "openai",
    max_concurrency: int = 4,
    pricing: tuple[float, float] = (1.0, 2.0),
    shared_cache: bool = False,
    fallbacks: list[str] | None = None,
    **limits: int,
) -> dict[str, object]:
    """Add a catalog model served by the fake provider (model id = name)."""
    from providers.fake import fake_model_config

    body = {
        "name": name,
        "provider": provider,
        "config": fake_model_config(
            provider, name, fake_url, timeoutSeconds=10
        ),
        "limits": {"maxConcurrency": max_concurrency, **limits},
        "pricing": {
            "inputPerMillion": pricing[0],
            "outputPerMillion": pricing[1],
        },
        "sharedCache": shared_cache,
        "fallbacks": fallbacks or [],
    }
    response = http.post("/admin/models", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def wait_for_job(
    http: httpx2.Client,
    client: ClientCredentials,
    job_id: str,
    *,
    until: tuple[str, ...] = ("PROCESSED", "FAILED", "CANCELED"),
    timeout_s: float = 120.0,
) -> dict[str, object]:
    """Poll a job until its status is one of ``until`` and it is idle."""
    import time

    deadline = time.monotonic() + timeout_s
    job: dict[str, object] = {}
    while time.monotonic() < deadline:
        job = http.get(f"/jobs/{job_id}", headers=client.headers).json()
        counts = job["counts"]
        assert isinstance(counts, dict)
        idle = counts["PENDING"] == 0 and counts["PROCESSING"] == 0
        if job["status"] in until and idle:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def all_results(
    http: httpx2.Client, client: ClientCredentials, job_id: str
) -> list[dict[str, object]]:
    """Every item of a job, through the paged results endpoint."""
    items: list[dict[str, object]] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = http.get(
            f"/jobs/{job_id}/results",
            params={"cursor": cursor, "limit": 1000},
            headers=client.headers,
        ).json()
        items += page["items"]
        cursor = page["nextCursor"]
    return items


def submit_job(
    http: httpx2.Client,
    client: ClientCredentials,
    items: list[dict[str, object]],
    **options: object,
) -> dict[str, object]:
    """``POST /jobs`` that must be accepted (201)."""
    response = http.post(
        "/jobs", json={"items": items, **options}, headers=client.headers
    )
    assert response.status_code == 201, response.text
    job: dict[str, object] = response.json()
    return job
