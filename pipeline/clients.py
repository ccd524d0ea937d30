"""Clients: who may call the API, their keys and their quotas."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pipeline.errors import NotFound, Unauthorized
from pipeline.logging import BusinessLogger
from pipeline.security import (
    IssuedKey,
    generate_client_key,
    hash_key,
    key_prefix,
    verify_key,
)
from pipeline.store import Store, parse_object_id
from pipeline.store.document_collection import Document

business = BusinessLogger()


class Quotas(BaseModel):
    """Optional limits on what a client may do (None: unlimited)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )

    max_pending_items: int | None = Field(None, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)
    budget: float | None = Field(None, ge=0, description="USD")


class ClientService:
    """Create, find, authenticate, rotate and deactivate clients."""

    def __init__(self, store: Store, pepper: str) -> None:
        self._docs = store.documents("clients")
        self._pepper = pepper

    async def create(
        self, name: str, quotas: Quotas | None, *, actor: str
    ) -> tuple[Document, IssuedKey]:
        """Register a client and issue its first key.

        Returns:
            The stored client and the key (to show once).
        """
        issued = generate_client_key()
        document = await self._docs.create(
            {
                "name": name,
                "keyPrefix": issued.prefix,
                "keyHash": hash_key(issued.key, self._pepper),
                "active": True,
                "quotas": (quotas or Quotas()).model_dump(by_alias=True),
            },
            actor=actor,
        )
        business.log_operation(
            "clients", "create", client_id=str(document["_id"])
        )
        return document, issued

    async def list(self, *, limit: int, skip: int) -> list[Document]:
        """Live clients, newest first."""
        return await self._docs.read(
            {}, sort=[("_id", -1)], limit=limit, skip=skip
        )

    async def get(self, client_id: str) -> Document:
        """A live client by id.

        Raises:
            NotFound: No such client.
        """
        return await self._docs.get(client_id, resource="client")

    async def update_quotas(
        self, client_id: str, quotas: Quotas, *, actor: str
    ) -> Document:
        """Replace a client's quotas."""
        object_id = parse_object_id(client_id, "client")
        document = await self._docs.update(
            {"_id": object_id},
            {"quotas": quotas.model_dump(by_alias=True)},
            actor=actor,
        )
        if document is None:
            raise NotFound("client", client_id)
        return document

    async def rotate_key(
        self, client_id: str, *, actor: str
    ) -> tuple[Document, IssuedKey]:
        """Replace a client's key; the old one stops working at once."""
        object_id = parse_object_id(client_id, "client")
        issued = generate_client_key()
        document = await self._docs.update(
            {"_id": object_id},
            {
                "keyPrefix": issued.prefix,
                "keyHash": hash_key(issued.key, self._pepper),
            },
            actor=actor,
        )
        if document is None:
            raise NotFound("client", client_id)
        business.log_operation("clients", "rotate_key", client_id=client_id)
        return document, issued

    async def deactivate(self, client_id: str, *, actor: str) -> None:
        """Deactivate and soft-delete a client; its key stops working."""
        object_id = parse_object_id(client_id, "client")
        updated = await self._docs.update(
            {"_id": object_id}, {"active": False}, actor=actor
        )
        if updated is None:
            raise NotFound("client", client_id)
        await self._docs.soft_delete({"_id": object_id}, actor=actor)
        business.log_operation("clients", "deactivate", client_id=client_id)

    async def authenticate(
        self, key: str, client_id: str | None = None
    ) -> Document:
        """Find the active client a key belongs to.

        Args:
            key: The presented client key.
            client_id: The presented client id, if any (it must match).

        Returns:
            The client.

        Raises:
            Unauthorized: Unknown, inactive or mismatched credentials.
        """
        query: dict[str, Any] | None = None
        prefix = key_prefix(key)
        if client_id is not None:
            if ObjectId.is_valid(client_id):
                query = {"_id": ObjectId(client_id)}
        elif prefix is not None:
            query = {"keyPrefix": prefix}
        client = await self._docs.find_one(query) if query else None
        stored = client.get("keyHash") if client else None
        if not verify_key(key, stored, self._pepper) or not (
            client and client.get("active")
        ):
            raise Unauthorized("invalid client credentials")
        return client
