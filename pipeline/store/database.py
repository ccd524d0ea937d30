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
from pymongo.errors import OperationFailure

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

#: Default lifetime of a result cache entry (``CACHE_TTL_SECONDS``).
DEFAULT_CACHE_TTL_S = 7 * 24 * 3600

#: A client's documents, newest first: every listing pages through this
#: by ``_id`` (keyset). The soft-delete flag is left out on purpose:
#: Cosmos DB for MongoDB (RU) refuses compound indexes on nested fields
#: (``_metadata.isDeleted``) by default, and deleted documents are few,
#: so the server filters them while it walks the index.
_BY_CLIENT = IndexModel([("clientId", ASCENDING), ("_id", DESCENDING)])

#: Indexes per collection. Compound indexes name top-level fields only,
#: so the same set works on MongoDB (standalone, replica set, Atlas),
#: Cosmos DB vCore and Cosmos DB RU. SecantusDB (the local server) only
#: keeps a query fast when its filter is bounded by one index, so the
#: hot queries are shaped to these exactly. Every query shape the code
#: runs is listed, with its index, in :mod:`pipeline.store.query_shapes`.
INDEXES: dict[str, list[IndexModel]] = {
    # Listed newest first through _id; authenticated by keyPrefix.
    "clients": [IndexModel([("keyPrefix", ASCENDING)], unique=True)],
    "models": [IndexModel([("name", ASCENDING)], unique=True)],
    "prompts": [_BY_CLIENT],
    "prompt_versions": [
        IndexModel(
            [("promptId", ASCENDING), ("version", ASCENDING)], unique=True
        ),
    ],
    "jobs": [
        _BY_CLIENT,
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
        # scans on 10k items; this sparse one answers in 4 ms.) Queries
        # bound it with ``$gte``, so a plain index serves them too.
        IndexModel([("leaseExpiresAt", ASCENDING)], sparse=True),
    ],
    "runs": [
        _BY_CLIENT,
        # The optimizer's scan for runs whose driver died.
        IndexModel([("status", ASCENDING)]),
    ],
    "datasets": [_BY_CLIENT],
    # Submissions in progress, swept when their process died.
    "ingestions": [IndexModel([("startedAt", ASCENDING)])],
    # run_answers: addressed by _id only (run id and request key).
    # result_cache: by _id, and expired by cache_expiry_index().
}

#: Indexes earlier versions created that no query uses any more: dropped
#: at start-up (each costs every write, and the nested ones stop index
#: creation on Cosmos DB RU).
OBSOLETE_INDEXES: dict[str, list[str]] = {
    "clients": ["_metadata.isDeleted_1_createdAt_-1"],
    "prompts": ["clientId_1__metadata.isDeleted_1__id_-1"],
    "jobs": ["clientId_1__metadata.isDeleted_1__id_-1", "status_1"],
    "runs": ["clientId_1__metadata.isDeleted_1__id_-1"],
    "datasets": ["clientId_1__metadata.isDeleted_1__id_-1"],
}

#: Collection of stored results, by cache key.
RESULT_CACHE = "result_cache"

#: Cosmos DB RU expires documents only through a TTL index on ``_ts``
#: (its last-modified time, which cache entries never change after
#: insert); it refuses one on any other field with this code.
_TTL_ONLY_ON_TS = 2


def cache_expiry_index(ttl_s: int) -> IndexModel:
    """The TTL index that expires result cache entries ``ttl_s`` old."""
    return IndexModel([("createdAt", ASCENDING)], expireAfterSeconds=ttl_s)


def cosmos_cache_expiry_index(ttl_s: int) -> IndexModel:
    """The same expiry where only ``_ts`` may carry a TTL (Cosmos RU)."""
    return IndexModel([("_ts", ASCENDING)], expireAfterSeconds=ttl_s)


def refuses_ttl_on_field(error: OperationFailure) -> bool:
    """Whether the server allows TTL on ``_ts`` only (Cosmos DB RU)."""
    message = str((error.details or {}).get("errmsg") or error)
    return error.code == _TTL_ONLY_ON_TS and "_ts" in message


def create_mongo_client(
    connection_string: str, *, app_name: str = "metasync", **options: Any
) -> AsyncMongoClient[Document]:
    """Open an async client with the project's timeouts and consistency.

    Every process reads what it (or another process) has just written: a
    job right after its submission, the items a claim leased. So writes
    are acknowledged by a majority (they survive a failover) and reads
    go to the primary, whatever the connection string says.

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
    options.setdefault("w", "majority")
    options.setdefault("readPreference", "primary")
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

    async def ensure_indexes(self, *, cache_ttl_s: int | None = None) -> None:
        """Create every index the project queries with (idempotent).

        Also drops the indexes of :data:`OBSOLETE_INDEXES` still present.

        Args:
            cache_ttl_s: Lifetime of result cache entries. None keeps an
                existing expiry as it is (only the API, which reads the
                setting, changes it) and creates the default one if none.
        """
        for name, indexes in INDEXES.items():
            collection = self.db[name]
            await safe_operation(
                partial(collection.create_indexes, indexes),
                what=f"create indexes on {name}",
            )
        for name, obsolete in OBSOLETE_INDEXES.items():
            await self._drop_indexes(self.db[name], obsolete)
        await self._ensure_cache_expiry(cache_ttl_s)

    async def _drop_indexes(
        self, collection: AsyncCollection[Document], names: list[str]
    ) -> None:
        present = await safe_operation(
            collection.index_information, what="list indexes"
        )
        for index in names:
            if index in present:
                await safe_operation(
                    partial(collection.drop_index, index),
                    what=f"drop index {index}",
                )

    async def _ensure_cache_expiry(self, ttl_s: int | None) -> None:
        """Expire result cache entries through a TTL index.

        The server's TTL monitor deletes an entry some time (a minute on
        MongoDB) after ``createdAt + ttl``.
        """
        cache = self.db[RESULT_CACHE]
        present = await safe_operation(
            cache.index_information, what="list indexes"
        )
        current = next(
            (
                (index_name, info)
                for index_name, info in present.items()
                if "expireAfterSeconds" in info
            ),
            None,
        )
        if current is not None:
            index_name, info = current
            if ttl_s is None or info["expireAfterSeconds"] == ttl_s:
                return
            # Changing the lifetime keeps the index (no rebuild).
            await safe_operation(
                partial(
                    self.db.command,
                    "collMod",
                    RESULT_CACHE,
                    index={"name": index_name, "expireAfterSeconds": ttl_s},
                ),
                what="change the result cache expiry",
            )
            return
        ttl = DEFAULT_CACHE_TTL_S if ttl_s is None else ttl_s
        try:
            await safe_operation(
                partial(cache.create_indexes, [cache_expiry_index(ttl)]),
                what="create the result cache expiry",
            )
        except OperationFailure as error:
            if not refuses_ttl_on_field(error):
                raise
            await safe_operation(
                partial(
                    cache.create_indexes, [cosmos_cache_expiry_index(ttl)]
                ),
                what="create the result cache expiry on _ts",
            )

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.close()
