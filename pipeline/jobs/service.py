"""Reading jobs and their results, and the client and admin actions.

Status changes are guarded updates: the state table says from which
statuses a change is allowed, and the database applies it only from
those, so the check and the change are one atomic step. Moving the
items themselves (cancel: PENDING -> CANCELED; requeue: FAILED ->
PENDING) is done by the workers, who own the items' windows; the job
says what was asked (``status`` CANCELED, ``requeues`` + 1) and the
workers are notified.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

from pipeline.errors import Conflict, InvalidTransition, NotFound
from pipeline.jobs.item_ids import WINDOW_ITEMS, item_ids
from pipeline.jobs.submission import release_idempotency_key
from pipeline.logging import BusinessLogger
from pipeline.states import JOB_TRANSITIONS, Actor, Status, sources
from pipeline.store import Store, parse_object_id
from pipeline.store.by_id import find_by_ids
from pipeline.store.database import LEASED
from pipeline.store.document_collection import Document, not_deleted, utcnow
from pipeline.store.keyset import KeysetPage, newest_first

S = Status
business = BusinessLogger()

#: Jobs whose submission is committed (the others are not shown).
COMMITTED = {"submitting": {"$exists": False}}

RESULT_FIELDS = {
    "_id": 1,
    "seq": 1,
    "customId": 1,
    "model": 1,
    # The model asked for and those that gave up, once an item moved to
    # a fallback (pipeline.worker.fallback).
    "requestedModel": 1,
    "fallbackFrom": 1,
    "status": 1,
    "attempts": 1,
    "result": 1,
    "error": 1,
    "startedAt": 1,
    "finishedAt": 1,
}


class JobService:
    """Jobs as their owners (and admins) see and steer them."""

    def __init__(self, store: Store) -> None:
        self._jobs = store.documents("jobs")
        self._items = store.raw("items")

    async def get(self, client_id: ObjectId | None, job_id: str) -> Document:
        """A live job of the client (any client's for admins: None).

        Raises:
            NotFound: No such job, or another client's.
        """
        query: dict[str, Any] = {
            "_id": parse_object_id(job_id, "job"),
            **COMMITTED,
        }
        if client_id is not None:
            query["clientId"] = client_id
        job = await self._jobs.find_one(query)
        if job is None:
            raise NotFound("job", job_id)
        return job

    async def processing_counts(
        self, job_ids: list[ObjectId]
    ) -> dict[ObjectId, int]:
        """Items under a lease right now, per job (PROCESSING)."""
        counts: dict[ObjectId, int] = dict.fromkeys(job_ids, 0)
        if not job_ids:
            return counts
        # Every leased item (in flight: few), through the lease index
        # alone: a jobId condition in the filter made SecantusDB scan
        # every item of every job.
        async for item in self._items.find(
            {"leaseExpiresAt": {"$gte": LEASED}}, {"jobId": 1}
        ):
            if item["jobId"] in counts:
                counts[item["jobId"]] += 1
        return counts

    async def list_jobs(
        self,
        client_id: ObjectId,
        *,
        status: Status | None,
        limit: int,
        cursor: str | None,
    ) -> KeysetPage:
        """The client's jobs, newest first, after ``cursor``."""
        query: dict[str, Any] = {"clientId": client_id}
        if status is not None:
            query["status"] = status.value
        page = await newest_first(
            self._jobs, query, limit=limit, cursor=cursor
        )
        # Uncommitted submissions are left out here, not in the query:
        # the listing's index holds only the fields above (a page may
        # then hold fewer jobs; the cursor still goes on).
        page.documents[:] = [
            job for job in page.documents if "submitting" not in job
        ]
        return page

    async def results_page(
        self, job: Document, cursor: int, limit: int, status: Status | None
    ) -> tuple[list[Document], int | None]:
        """Items with ``cursor <= seq < cursor + limit``, in order.

        Looked up by their computed ids: fast on any server. With a
        status filter a page may hold fewer items.

        Returns:
            The items and the next cursor (None after the last item).
        """
        end = min(cursor + limit, job["totalItems"])
        ids = item_ids(job["itemBase"], cursor, end)
        items = await find_by_ids(self._items, ids, RESULT_FIELDS)
        items.sort(key=lambda item: item["seq"])
        if status is not None:
            items = [i for i in items if i["status"] == status]
        return items, (end if end < job["totalItems"] else None)

    async def stream_results(
        self, job: Document, status: Status | None
    ) -> AsyncIterator[Document]:
        """Every item of the job, in order, one window at a time."""
        cursor: int | None = 0
        while cursor is not None:
            items, cursor = await self.results_page(
                job, cursor, WINDOW_ITEMS, status
            )
            for item in items:
                yield item

    async def transition(
        self,
        client_id: ObjectId | None,
        job_id: str,
        target: Status,
        actor: Actor,
    ) -> Document:
        """Move a job to ``target`` if the state table allows it.

        Raises:
            NotFound: No such job (or another client's).
            InvalidTransition: Not allowed from the current status.
        """
        job = await self.get(client_id, job_id)
        allowed = [s.value for s in sources(JOB_TRANSITIONS, actor, target)]
        now = utcnow()
        stamp = {
            S.CANCELED: "canceledAt",
            S.CONSUMED: "consumedAt",
            S.ERROR_CONSUMING: "consumedAt",
        }[target]
        updated = await self._jobs.update(
            {"_id": job["_id"], "status": {"$in": allowed}},
            {"status": target.value, stamp: now},
            actor=_actor_name(actor, client_id),
        )
        if updated is None:
            current = await self.get(client_id, job_id)
            raise InvalidTransition("job", current["status"], target)
        business.log_operation(
            "jobs", target.value.lower(), job_id=job_id, actor=actor.value
        )
        return updated

    async def delete(self, client_id: ObjectId, job_id: str) -> Document:
        """Soft-delete a job; its pending items are canceled.

        Raises:
            NotFound: No such job.
        """
        job = await self.get(client_id, job_id)
        actor = _actor_name(Actor.CLIENT, client_id)
        if job["status"] in (S.PENDING, S.PROCESSING):
            await self._jobs.update(
                {
                    "_id": job["_id"],
                    "status": {"$in": [S.PENDING, S.PROCESSING]},
                },
                {"status": S.CANCELED.value, "canceledAt": utcnow()},
                actor=actor,
            )
        await self._jobs.soft_delete({"_id": job["_id"]}, actor=actor)
        # The key may name a new job now.
        await release_idempotency_key(
            self._jobs.collection, job["_id"], job.get("idempotencyKey")
        )
        business.log_operation("jobs", "delete", job_id=job_id)
        return job

    async def requeue(self, job_id: str) -> Document:
        """Ask the workers to put a job's FAILED items back to PENDING.

        Raises:
            NotFound: No such job.
            InvalidTransition: The job is not in a requeueable status.
            Conflict: It has no failed items.
        """
        job = await self.get(None, job_id)
        allowed = [
            s.value for s in sources(JOB_TRANSITIONS, Actor.ADMIN, S.PENDING)
        ]
        if job["status"] not in allowed:
            raise InvalidTransition("job", job["status"], S.PENDING)
        if not job["counts"].get(S.FAILED):
            raise Conflict("the job has no failed items to requeue")
        updated = await self._jobs.collection.find_one_and_update(
            not_deleted({"_id": job["_id"], "status": {"$in": allowed}}),
            [
                {
                    "$set": {
                        "requeues": {
                            "$add": [{"$ifNull": ["$requeues", 0]}, 1]
                        },
                        "active": True,
                        "_metadata.updatedBy": "admin",
                    }
                },
            ],
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            current = await self.get(None, job_id)
            raise InvalidTransition("job", current["status"], S.PENDING)
        business.log_operation(
            "jobs",
            "requeue",
            job_id=job_id,
            failed=job["counts"].get(S.FAILED),
        )
        return updated


def _actor_name(actor: Actor, client_id: ObjectId | None) -> str:
    return f"client:{client_id}" if actor == Actor.CLIENT else actor.value
