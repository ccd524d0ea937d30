"""The database handle of one process: client, collections, indexes.

Each process (Serve replica, worker actor, CLI) opens its own
:class:`Store` from its settings. Index creation is idempotent and runs
at start-up; every query the API and the workers make has an index.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from pipeline.store.document_collection import Document, DocumentCollection
from pipeline.store.retry import safe_operation

#: Lower bound of every lease expiry: ``{"leaseExpiresAt": {"$gte":
#: LEASED}}`` selects leased items through the sparse index.
LEASED = datetime(1970, 1, 1, tzinfo=UTC)

#: How long an operation waits for a reachable server before failing.
#: Short, so an outage becomes a prompt 503 rather than a hung request.
SERVER_SELECTION_TIMEOUT_MS = 3000

#: How long a reply may take on an open connection. The driver waits
#: forever by default: a connection that dies without a reset (a network
#: partition, a stalled proxy) would hang its operation for good.
SOCKET_TIMEOUT_MS = 20_000

_LIVE = ("_metadata.isDeleted", ASCENDING)

#: Indexes per collection. SecantusDB (the local server) only keeps a
#: query fast when its filter is covered by one index and bounded, so
#: the hot queries are shaped to these exactly.
INDEXES: dict[str, list[IndexModel]] = {
    "clients": [
        IndexModel([("keyPrefix", ASCENDING)], unique=True),
        IndexModel([_LIVE, ("createdAt", DESCENDING)]),
    ],
    "models": [IndexModel([("name", ASCENDING)], unique=True)],
    "prompts": [
        IndexModel([("clientId", ASCENDING), _LIVE, ("_id", DESCENDING)]),
    ],
    "prompt_versions": [
        IndexModel(
            [("promptId", ASCENDING), ("version", ASCENDING)], unique=True
        ),
    ],
    "jobs": [
        IndexModel([("clientId", ASCENDING), _LIVE, ("_id", DESCENDING)]),
        # The workers poll the active jobs among every job ever created.
        # (No query filters on status alone: no index for it.)
        IndexModel([("active", ASCENDING)]),
        IndexModel(
            [("clientId", ASCENDING), ("idempotencyKey", ASCENDING)],
            unique=True,
            partialFilterExpression={"idempotencyKey": {"$exists": True}},
        ),
    ],
    "items": [
        # No (jobId, seq) index: a job's items have consecutive ids
        # (pipeline.jobs.item_ids), and each index costs every insert
        # and update dearly on SecantusDB.
        # Leased items (in flight). Sparse: only leased items carry the
        # field, so inserts skip it (+7% insert rate) and it stays tiny.
        # (SecantusDB never uses *partial* indexes: measured 110-190 ms
        # scans on 10k items; this sparse one answers in 4 ms.)
        IndexModel([("leaseExpiresAt", ASCENDING)], sparse=True),
    ],
    # One record per provider batch; the open ones are polled by state.
    "provider_batches": [
        IndexModel([("state", ASCENDING), ("provider", ASCENDING)]),
    ],
    "runs": [
        IndexModel([("clientId", ASCENDING), _LIVE, ("_id", DESCENDING)]),
        # The optimizer's scan for runs whose driver died.
        IndexModel([("status", ASCENDING)]),
    ],
    "datasets": [
        IndexModel([("clientId", ASCENDING), _LIVE, ("_id", DESCENDING)]),
    ],
    # run_answers: addressed by _id only (run id and request key).
}


def create_mongo_client(
    connection_string: str, *, app_name: str = "metasync", **options: Any
) -> AsyncMongoClient[Document]:
    """Open an async client with the project's timeouts.

    Args:
        connection_string: Any MongoDB URI (Atlas, Cosmos DB, local).
        app_name: Shown in the server's logs and ``currentOp``.
        **options: Extra driver options (tests add event listeners).

    Returns:
        The client; it connects lazily.
    """
    options.setdefault("serverSelectionTimeoutMS", SERVER_SELECTION_TIMEOUT_MS)
    options.setdefault("socketTimeoutMS", SOCKET_TIMEOUT_MS)
    options.setdefault("tz_aware", True)
    return AsyncMongoClient(connection_string, appname=app_name, **options)


class Store:
    """A process's database: its client and the project's collections."""

    def __init__(
        self, client: AsyncMongoClient[Document], db_name: str
    ) -> None:
        self.client = client
        self.db: AsyncDatabase[Document] = client[db_name]

    def raw(self, name: str) -> AsyncCollection[Document]:
        """A collection without the soft-delete helpers (hot paths)."""
        return self.db[name]

    def documents(self, name: str) -> DocumentCollection:
        """A collection with the seed's ``_metadata`` helpers."""
        return DocumentCollection(self.db[name])

    async def ping(self) -> None:
        """Check the server answers.

        Raises:
            DatabaseUnavailable: It does not.
        """
        await safe_operation(
            lambda: self.db.command("ping"), attempts=1, what="ping"
        )

    async def ensure_indexes(self) -> None:
        """Create every index the project queries with (idempotent)."""
        for name, indexes in INDEXES.items():
            collection = self.db[name]
            await safe_operation(
                partial(collection.create_indexes, indexes),
                what=f"create indexes on {name}",
            )

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.close()
