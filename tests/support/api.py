"""Helpers for driving the HTTP API in tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx2


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
