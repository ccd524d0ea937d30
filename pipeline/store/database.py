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

from pipeline.logging import get_logger
from pipeline.store.document_collection import Document, DocumentCollection
from pipeline.store.retry import safe_operation

log = get_logger(__name__)

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

#: The soft-delete flag: every read through DocumentCollection filters on
#: it, so the indexes of those reads carry it (SecantusDB only uses an
#: index whose leading keys hold every filtered field).
_LIVE = ("_metadata.isDeleted", ASCENDING)


def _newest_by_client() -> IndexModel:
    """A client's live documents, newest first (keyset listings)."""
    return IndexModel([("clientId", ASCENDING), _LIVE, ("_id", DESCENDING)])


#: Indexes per collection; every query shape the code runs is listed,
#: with the index serving it, in :mod:`pipeline.store.query_shapes`.
#: Compound indexes that name the nested soft-delete flag are created
#: without it where a server refuses nested fields in compound indexes
#: (Cosmos DB RU, by default): see :func:`without_nested_fields`.
INDEXES: dict[str, list[IndexModel]] = {
    "clients": [
        IndexModel([("keyPrefix", ASCENDING)], unique=True),
        # Authentication by key prefix, and the newest-first listing.
        IndexModel([("keyPrefix", ASCENDING), _LIVE]),
        IndexModel([_LIVE, ("_id", DESCENDING)]),
    ],
    "models": [
        IndexModel([("name", ASCENDING)], unique=True),
        IndexModel([("name", ASCENDING), _LIVE, ("active", ASCENDING)]),
        # The catalog listing, by name.
        IndexModel([_LIVE, ("active", ASCENDING), ("name", ASCENDING)]),
    ],
    "prompts": [_newest_by_client()],
    "prompt_versions": [
        IndexModel(
            [("promptId", ASCENDING), ("version", ASCENDING)], unique=True
        ),
        # ($in on versions: SecantusDB takes $in on the last key only.)
        IndexModel([("promptId", ASCENDING), _LIVE, ("version", ASCENDING)]),
    ],
    "jobs": [
        _newest_by_client(),
        IndexModel(
            [
                ("clientId", ASCENDING),
                _LIVE,
                ("status", ASCENDING),
                ("_id", DESCENDING),
            ]
        ),
        # Uncommitted submissions, swept when abandoned. Sparse: only
        # they carry the field, so it stays tiny.
        IndexModel([("submitting", ASCENDING)], sparse=True),
        # The workers poll the active jobs among every job ever created.
        # (No query filters on status alone: no index for it.)
        IndexModel([("active", ASCENDING)]),
        IndexModel(
            [("clientId", ASCENDING), ("idempotencyKey", ASCENDING)],
            unique=True,
            partialFilterExpression={"idempotencyKey": {"$exists": True}},
        ),
        # The lookup of a repeated key (SecantusDB ignores partial
        # indexes).
        IndexModel(
            [("clientId", ASCENDING), ("idempotencyKey", ASCENDING), _LIVE]
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
        # filter on it alone: any other field in the filter (jobId,
        # model) made SecantusDB scan every item.
        IndexModel([("leaseExpiresAt", ASCENDING)], sparse=True),
    ],
    # One record per provider batch; each worker polls its open ones.
    "provider_batches": [
        IndexModel(
            [
                ("owner", ASCENDING),
                ("provider", ASCENDING),
                ("state", ASCENDING),
            ]
        ),
        # Open records of replicas that no longer run (their adoption).
        IndexModel([("provider", ASCENDING), ("state", ASCENDING)]),
    ],
    "runs": [
        _newest_by_client(),
        # The optimizer's scan for runs whose driver died.
        IndexModel([("status", ASCENDING)]),
    ],
    "datasets": [_newest_by_client()],
    # run_answers: addressed by _id only (run id and request key).
    # result_cache: by _id, and expired by cache_expiry_index().
}

#: Indexes earlier versions created that no query uses any more: dropped
#: at start-up (each costs every write).
OBSOLETE_INDEXES: dict[str, list[str]] = {
    "clients": ["_metadata.isDeleted_1_createdAt_-1"],
    "jobs": ["status_1"],
    "provider_batches": ["state_1_provider_1"],
}


def without_nested_fields(model: IndexModel) -> IndexModel | None:
    """The index without its nested fields, for servers refusing them.

    Cosmos DB RU refuses nested fields in compound indexes by default.

    Returns:
        The portable index, or None when ``model`` has no nested field in
        a compound key (nothing to drop).
    """
    document = dict(model.document)
    keys = list(document.pop("key").items())
    document.pop("name", None)
    kept = [(field, order) for field, order in keys if "." not in field]
    if len(keys) < 2 or len(kept) == len(keys) or not kept:
        return None
    return IndexModel(kept, **document)


#: The server's answer to dropping an index that is gone.
_INDEX_NOT_FOUND = 27

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
            await self._create_indexes(self.db[name], indexes)
        for name, obsolete in OBSOLETE_INDEXES.items():
            await self._drop_indexes(self.db[name], obsolete)
        await self._ensure_cache_expiry(cache_ttl_s)

    async def _create_indexes(
        self, collection: AsyncCollection[Document], indexes: list[IndexModel]
    ) -> None:
        """Create ``indexes``; without nested fields where refused."""
        try:
            await safe_operation(
                partial(collection.create_indexes, indexes),
                what=f"create indexes on {collection.name}",
            )
            return
        except OperationFailure:
            pass
        for model in indexes:
            try:
                await safe_operation(
                    partial(collection.create_indexes, [model]),
                    what=f"create an index on {collection.name}",
                )
            except OperationFailure as error:
                portable = without_nested_fields(model)
                if portable is None:
                    raise
                log.warning(
                    "index_without_nested_fields",
                    collection=collection.name,
                    index=model.document["name"],
                    error=str(error),
                )
                await safe_operation(
                    partial(collection.create_indexes, [portable]),
                    what=f"create an index on {collection.name}",
                )

    async def _drop_indexes(
        self, collection: AsyncCollection[Document], names: list[str]
    ) -> None:
        present = await safe_operation(
            collection.index_information, what="list indexes"
        )
        for index in names:
            if index not in present:
                continue
            try:
                await safe_operation(
                    partial(collection.drop_index, index),
                    what=f"drop index {index}",
                )
            except OperationFailure as error:
                # Another process starting at the same time dropped it.
                if error.code != _INDEX_NOT_FOUND:
                    raise

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
