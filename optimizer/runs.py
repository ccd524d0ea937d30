"""Stored runs and datasets, and the lease that gives a run one driver.

A run document holds its configuration, the prompts it started from,
its dataset's id, its saved :class:`~optimizer.state.RunState`, a
progress summary and, once finished, its result. A driver (the cluster's
optimizer actor, or a Python driver script) holds a run through a lease
it renews; a run whose lease lapsed (its driver died) is taken over by
the next driver that looks, and resumes from its saved state.

Run statuses: ``QUEUED`` → ``RUNNING`` → ``SUCCEEDED`` | ``FAILED`` |
``CANCELED``; a cancel of a running run is a request the loop honours
before its next iteration.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

from pipeline.errors import InvalidTransition, NotFound
from pipeline.store import Store, not_deleted, parse_object_id, safe_operation
from pipeline.store.document_collection import Document, utcnow
from pipeline.store.keyset import KeysetPage, newest_first

QUEUED = "QUEUED"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELED = "CANCELED"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (SUCCEEDED, FAILED, CANCELED)

#: Seconds a driver holds a run without renewing its lease.
LEASE_SECONDS = 30.0


class LeaseLost(Exception):
    """Another driver took the run over (this one was presumed dead)."""


def _owner_query(client_id: ObjectId | None) -> dict[str, Any]:
    return {} if client_id is None else {"clientId": client_id}


class RunStore:
    """Runs and datasets in MongoDB."""

    def __init__(self, store: Store) -> None:
        self.runs = store.documents("runs")
        self.datasets = store.documents("datasets")

    # Datasets -------------------------------------------------------

    async def create_dataset(
        self,
        client_id: ObjectId | None,
        name: str | None,
        examples: list[dict[str, Any]],
        *,
        actor: str,
    ) -> Document:
        """Store a dataset (examples already validated)."""
        return await self.datasets.create(
            {
                "clientId": client_id,
                "name": name,
                "size": len(examples),
                "examples": examples,
            },
            actor=actor,
        )

    async def get_dataset(
        self,
        client_id: ObjectId | None,
        dataset_id: str | ObjectId,
        *,
        examples: bool = True,
    ) -> Document:
        """A client's dataset.

        Raises:
            NotFound: No such dataset, or another client's.
        """
        object_id = parse_object_id(dataset_id, "dataset")
        projection = None if examples else {"examples": 0}
        found = await self.datasets.find_one(
            {"_id": object_id, **_owner_query(client_id)}, projection
        )
        if found is None:
            raise NotFound("dataset", dataset_id)
        return found

    async def list_datasets(
        self, client_id: ObjectId, *, limit: int, cursor: str | None
    ) -> KeysetPage:
        """A client's datasets, newest first, without their examples."""
        return await newest_first(
            self.datasets,
            {"clientId": client_id},
            limit=limit,
            cursor=cursor,
            projection={"examples": 0},
        )

    # Runs -----------------------------------------------------------

    async def create_run(
        self, fields: dict[str, Any], *, actor: str
    ) -> Document:
        """Store a new run, ``QUEUED``."""
        return await self.runs.create(
            {**fields, "status": QUEUED, "cancelRequested": False},
            actor=actor,
        )

    async def get_run(
        self, client_id: ObjectId | None, run_id: str | ObjectId
    ) -> Document:
        """A client's run.

        Raises:
            NotFound: No such run, or another client's.
        """
        object_id = parse_object_id(run_id, "run")
        found = await self.runs.find_one(
            {"_id": object_id, **_owner_query(client_id)}
        )
        if found is None:
            raise NotFound("run", run_id)
        return found

    async def list_runs(
        self, client_id: ObjectId, *, limit: int, cursor: str | None
    ) -> KeysetPage:
        """A client's runs, newest first, without their saved state."""
        return await newest_first(
            self.runs,
            {"clientId": client_id},
            limit=limit,
            cursor=cursor,
            projection={"state": 0},
        )

    async def request_cancel(
        self, client_id: ObjectId | None, run_id: str, *, actor: str
    ) -> Document:
        """Cancel a queued run now, or ask a running one to stop.

        Raises:
            NotFound: No such run.
            InvalidTransition: The run has finished.
        """
        run = await self.get_run(client_id, run_id)
        if run["status"] in FINISHED:
            raise InvalidTransition("run", run["status"], CANCELED)
        queued = await self.runs.update(
            {"_id": run["_id"], "status": QUEUED},
            {"status": CANCELED, "cancelRequested": True},
            actor=actor,
        )
        if queued is not None:
            return queued
        updated = await self.runs.update(
            {"_id": run["_id"], "status": {"$in": list(ACTIVE)}},
            {"cancelRequested": True},
            actor=actor,
        )
        return updated or await self.get_run(client_id, run_id)

    async def cancel_requested(self, run_id: ObjectId) -> bool:
        """Whether someone asked the run to stop."""
        found = await self.runs.find_one(
            {"_id": run_id}, {"cancelRequested": 1}
        )
        return found is None or bool(found.get("cancelRequested"))

    async def claim(self, run_id: ObjectId, owner: str) -> Document | None:
        """Take an active run whose lease is free, lapsed or ours.

        Returns:
            The run, or None when another live driver holds it (or it
            has finished).
        """
        now = utcnow()

        async def take() -> Document | None:
            return await self.runs.collection.find_one_and_update(
                not_deleted(
                    {
                        "_id": run_id,
                        "status": {"$in": list(ACTIVE)},
                        "$or": [
                            {"leaseOwner": owner},
                            {"leaseExpiresAt": None},
                            {"leaseExpiresAt": {"$lt": now}},
                        ],
                    }
                ),
                {
                    "$set": {
                        "status": RUNNING,
                        "leaseOwner": owner,
                        "leaseExpiresAt": now
                        + timedelta(seconds=LEASE_SECONDS),
                        "_metadata.updatedAt": now,
                    }
                },
                return_document=ReturnDocument.AFTER,
            )

        return await safe_operation(take, what="claim a run")

    async def renew(self, run_id: ObjectId, owner: str) -> None:
        """Extend the lease.

        Raises:
            LeaseLost: Another driver holds the run now.
        """
        await self._as_owner(run_id, owner, {})

    async def save(
        self, run_id: ObjectId, owner: str, changes: dict[str, Any]
    ) -> None:
        """Save fields of a run this driver holds (and renew the lease).

        Raises:
            LeaseLost: Another driver holds the run now.
        """
        await self._as_owner(run_id, owner, changes)

    async def _as_owner(
        self, run_id: ObjectId, owner: str, changes: dict[str, Any]
    ) -> None:
        now = utcnow()
        expiry = now + timedelta(seconds=LEASE_SECONDS)

        async def update() -> int:
            result = await self.runs.collection.update_one(
                {"_id": run_id, "leaseOwner": owner, "status": RUNNING},
                {
                    "$set": {
                        **changes,
                        "leaseExpiresAt": expiry,
                        "_metadata.updatedAt": now,
                    }
                },
            )
            return result.matched_count

        if not await safe_operation(update, what="save a run"):
            raise LeaseLost(str(run_id))

    async def release(self, owner: str) -> int:
        """Free the leases ``owner`` holds (its driver retires).

        The runs stay RUNNING with their saved state: the next driver
        that scans for orphans takes them at once.

        Returns:
            How many runs were released.
        """

        async def free() -> int:
            # Active runs are few: found by status (its index), theirs
            # picked here, freed by _id and still guarded by the owner.
            active = await self.runs.collection.find(
                {"status": {"$in": list(ACTIVE)}}, {"leaseOwner": 1}
            ).to_list()
            ids = [d["_id"] for d in active if d.get("leaseOwner") == owner]
            if not ids:
                return 0
            result = await self.runs.collection.update_many(
                {"_id": {"$in": ids}, "leaseOwner": owner},
                {"$set": {"leaseExpiresAt": None}},
            )
            return result.modified_count

        return await safe_operation(free, what="release runs")

    async def orphans(self, owner: str) -> list[ObjectId]:
        """Active runs with no live driver, or held under ``owner``.

        Runs scored by a Python function are left out: only a driver
        script holding that function can resume them.

        A driver that restarts under the same name (the cluster's one
        optimizer actor) takes its runs back at once, without waiting
        for their leases to lapse.
        """
        now = utcnow()
        # Active runs are few: the server filters by status alone (its
        # index) and the rest is checked here.
        found = await self.runs.collection.find(
            {"status": {"$in": list(ACTIVE)}},
            {
                "_metadata.isDeleted": 1,
                "config.scorer.kind": 1,
                "leaseOwner": 1,
                "leaseExpiresAt": 1,
            },
        ).to_list()
        return [
            doc["_id"]
            for doc in found
            if not doc["_metadata"]["isDeleted"]
            # Only its driver script holds a Python scorer: such a run
            # waits for `optimize(resume=...)`.
            and ((doc.get("config") or {}).get("scorer") or {}).get("kind")
            != "python"
            and (
                doc.get("leaseOwner") == owner
                or doc.get("leaseExpiresAt") is None
                or doc["leaseExpiresAt"] < now
            )
        ]
