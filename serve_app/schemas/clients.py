"""Bodies of the admin client endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from pipeline.clients import Quotas
from serve_app.schemas.common import ApiModel, RequestModel, metadata_times


class QuotasIn(Quotas):
    """Quotas in a request: numbers only (lax parsing took ``false`` as 0)."""

    model_config = ConfigDict(strict=True)


class ClientCreate(RequestModel):
    """``POST /admin/clients``."""

    name: str = Field(min_length=1, max_length=200)
    quotas: QuotasIn | None = None


class ClientOut(ApiModel):
    """A client as admins see it (never its key or key hash)."""

    client_id: str
    name: str
    key_prefix: str
    active: bool
    quotas: Quotas
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_doc(cls, document: dict[str, Any]) -> ClientOut:
        """Build from a stored client."""
        return cls(
            client_id=str(document["_id"]),
            name=document["name"],
            key_prefix=document["keyPrefix"],
            active=document["active"],
            quotas=Quotas.model_validate(document.get("quotas") or {}),
            **metadata_times(document),
        )


class ClientWithKey(ClientOut):
    """A client with its new key: shown once, at creation or rotation."""

    api_key: str


class ClientList(ApiModel):
    """``GET /admin/clients``."""

    items: list[ClientOut]
    limit: int
    offset: int
