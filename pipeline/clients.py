"""Clients: who may call the API, their keys and their quotas."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
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
from pipeline.store.keyset import newest_first

business = BusinessLogger()


class Quotas(BaseModel):
    """Optional limits on what a client may do (None: unlimited)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )

    max_pending_items: int | None = Field(None, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)
    budget: float | None = Field(None, ge=0, description="USD")


@dataclass(frozen=True)
class Usage:
    """A client's usage counters as stored (see :mod:`pipeline.usage`)."""

    pending_items: int = 0
    reserved_cost: float = 0.0
    spent_cost: float = 0.0

    @classmethod
    def from_doc(cls, client: Mapping[str, Any]) -> Usage:
        """Read the counters of a client document."""
        usage = client.get("usage") or {}
        return cls(
            int(usage.get("pendingItems", 0)),
            float(usage.get("reservedCost", 0.0)),
            float(usage.get("spentCost", 0.0)),
        )


@dataclass(frozen=True)
class Client:
    """A stored client, typed: read with :meth:`from_doc` everywhere.

    Attributes:
        id: The client.
        name: Its name.
        key_prefix: The public prefix of its key (finds it by key).
        key_hash: The HMAC of its key (never shown).
        active: False once deactivated: its key stops working.
        quotas: Its limits (unset: unlimited).
        usage: What it holds and spent of them.
        created_at: When it was registered.
        updated_at: When it last changed.
    """

    id: ObjectId
    name: str
    key_prefix: str
    key_hash: str
    active: bool
    quotas: Quotas
    usage: Usage = Usage()
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def actor(self) -> str:
        """How the client appears in ``_metadata``."""
        return f"client:{self.id}"

    @classmethod
    def from_doc(cls, doc: Document) -> Client:
        """Read a stored client."""
        metadata = doc.get("_metadata") or {}
        return cls(
            id=doc["_id"],
            name=doc["name"],
            key_prefix=doc["keyPrefix"],
            key_hash=doc["keyHash"],
            active=bool(doc["active"]),
            quotas=Quotas.model_validate(doc.get("quotas") or {}),
            usage=Usage.from_doc(doc),
            created_at=metadata.get("createdAt"),
            updated_at=metadata.get("updatedAt"),
        )

    def to_doc(self) -> Document:
        """Its stored fields (``_metadata`` is the store's to write)."""
        return {
            "_id": self.id,
            "name": self.name,
            "keyPrefix": self.key_prefix,
            "keyHash": self.key_hash,
            "active": self.active,
            "quotas": self.quotas.model_dump(by_alias=True),
        }


class ClientService:
    """Create, find, authenticate, rotate and deactivate clients."""

    def __init__(self, store: Store, pepper: str) -> None:
        self._docs = store.documents("clients")
        self._pepper = pepper

    async def create(
        self, name: str, quotas: Quotas | None, *, actor: str
    ) -> tuple[Client, IssuedKey]:
        """Register a client and issue its first key.

        Returns:
            The stored client and the key (to show once).
        """
        issued = generate_client_key()
        fresh = Client(
            id=ObjectId(),
            name=name,
            key_prefix=issued.prefix,
            key_hash=hash_key(issued.key, self._pepper),
            active=True,
            quotas=quotas or Quotas(),
        )
        document = await self._docs.create(fresh.to_doc(), actor=actor)
        business.log_operation(
            "clients", "create", client_id=str(document["_id"])
        )
        return Client.from_doc(document), issued

    async def list(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[Client], str | None]:
        """Live clients, newest first, after ``cursor``.

        Returns:
            The page and the cursor of the next one (None: the last).
        """
        page = await newest_first(self._docs, {}, limit=limit, cursor=cursor)
        clients = [Client.from_doc(d) for d in page.documents]
        return clients, page.next_cursor

    async def get(self, client_id: str) -> Client:
        """A live client by id.

        Raises:
            NotFound: No such client.
        """
        return Client.from_doc(
            await self._docs.get(client_id, resource="client")
        )

    async def update_quotas(
        self, client_id: str, quotas: Quotas, *, actor: str
    ) -> Client:
        """Replace a client's quotas."""
        object_id = parse_object_id(client_id, "client")
        document = await self._docs.update(
            {"_id": object_id},
            {"quotas": quotas.model_dump(by_alias=True)},
            actor=actor,
        )
        if document is None:
            raise NotFound("client", client_id)
        return Client.from_doc(document)

    async def rotate_key(
        self, client_id: str, *, actor: str
    ) -> tuple[Client, IssuedKey]:
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
        return Client.from_doc(document), issued

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
    ) -> Client:
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
        document = await self._docs.find_one(query) if query else None
        client = Client.from_doc(document) if document else None
        stored = client.key_hash if client else None
        if not verify_key(key, stored, self._pepper) or not (
            client and client.active
        ):
            raise Unauthorized("invalid client credentials")
        return client
