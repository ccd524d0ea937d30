"""Atomic groups of writes: a transaction where the server has them.

Replica sets, sharded clusters, Atlas, Cosmos DB and the local
SecantusDB all run multi-document transactions; a standalone ``mongod``
does not. :class:`Atomic` runs a group of writes in a transaction when it
can, and as plain sequential writes otherwise (a crash between them can
then leave a job's counters off; ``metasync`` says so at start-up).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from pipeline.logging import get_logger

T = TypeVar("T")

log = get_logger(__name__)


async def server_supports_transactions(client: AsyncMongoClient[Any]) -> bool:
    """Whether the server is a replica set or a sharded cluster."""
    hello = await client.admin.command("hello")
    return bool(hello.get("setName") or hello.get("msg") == "isdbgrid")


class Atomic:
    """Runs groups of writes atomically when the server allows it."""

    def __init__(self, client: AsyncMongoClient[Any], enabled: bool) -> None:
        self._client = client
        self.enabled = enabled
        if not enabled:
            log.warning(
                "transactions_unavailable",
                detail="standalone server: job counters are updated "
                "without transactions",
            )

    async def run(
        self, writes: Callable[[AsyncClientSession | None], Awaitable[T]]
    ) -> T:
        """Run ``writes`` (given the session to pass to each operation).

        In a transaction, the driver retries the whole group on a
        transient error, so ``writes`` must be safe to run again.
        """
        if not self.enabled:
            return await writes(None)
        async with self._client.start_session() as session:
            return await session.with_transaction(writes)
