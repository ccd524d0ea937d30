"""Which code version the cluster's actors should run: one stored record.

Each API replica that starts claims the record for its code version.
Ray Serve starts a deploy's new replicas while the old ones still run,
and never starts a replica of the old version once a deploy has begun,
so the replica that claimed last runs the newest code. A replica whose
version is not the record's stands down: it creates no actor, and the
current version's replicas retire the actors of every other version
(:mod:`pipeline.cluster.rollout`). Deploying older code again is an
upgrade like any other.
"""

from __future__ import annotations

from typing import Any

from pipeline.store.database import Store
from pipeline.store.document_collection import utcnow

#: The collection and the one document in it.
COLLECTION = "deployment"
RECORD_ID = "actors"


class DeployedVersion:
    """The stored code version the actors should run.

    Args:
        store: This process's database.
    """

    def __init__(self, store: Store) -> None:
        self._records = store.raw(COLLECTION)

    async def claim(self, version: str) -> None:
        """Make ``version`` the current one (a new replica started)."""
        await self._records.update_one(
            {"_id": RECORD_ID},
            {"$set": {"codeVersion": version, "claimedAt": utcnow()}},
            upsert=True,
        )

    async def current(self) -> str | None:
        """The current version; None before any replica claimed one."""
        record: dict[str, Any] | None = await self._records.find_one(
            {"_id": RECORD_ID}
        )
        return None if record is None else str(record["codeVersion"])
