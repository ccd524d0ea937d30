"""Bodies of the admin client endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from pipeline.clients import Client, Quotas
from serve_app.schemas.common import ApiModel, RequestModel


class QuotasIn(Quotas):
    """Quotas in a request: numbers only (lax parsing took ``false`` as 0)."""

    model_config = ConfigDict(strict=True)


class ClientCreate(RequestModel):
    """``POST /admin/clients``."""

    name: str = Field(min_length=1, max_length=200)
    quotas: QuotasIn | None = None


class UsageOut(ApiModel):
    """What a client holds of its quotas and has spent."""

    pending_items: int
    reserved_cost: float = Field(description="USD")
    spent_cost: float = Field(description="USD")


class ClientOut(ApiModel):
    """A client as admins see it (never its key or key hash)."""

    client_id: str
    name: str
    key_prefix: str
    active: bool
    quotas: Quotas
    usage: UsageOut
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_client(cls, client: Client) -> ClientOut:
        """Build from a stored client."""
        return cls(
            client_id=str(client.id),
            name=client.name,
            key_prefix=client.key_prefix,
            active=client.active,
            quotas=client.quotas,
            usage=UsageOut(
                pending_items=client.usage.pending_items,
                reserved_cost=client.usage.reserved_cost,
                spent_cost=client.usage.spent_cost,
            ),
            created_at=client.created_at,
            updated_at=client.updated_at,
        )


class ClientWithKey(ClientOut):
    """A client with its new key: shown once, at creation or rotation."""

    api_key: str


class ClientList(ApiModel):
    """``GET /admin/clients``, newest first.

    Pass ``nextCursor`` as ``cursor`` for the next page.
    """

    items: list[ClientOut]
    next_cursor: str | None
