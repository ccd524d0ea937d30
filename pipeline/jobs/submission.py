"""Submitting a job: validation, quotas, idempotency, a recoverable insert.

A submission is written in steps, each safe to repeat:

1. the job document, marked ``submitting`` (and not ``active``): it
   claims the idempotency key, and workers and listings ignore it;
2. the client's quota reservation (:mod:`pipeline.usage`), keyed by the
   job, so it is made once however often it is tried;
3. the items (their ids follow from the job's item base, so a repeated
   insert finds the ones already there);
4. the commit: ``submitting`` removed and the job made ``active``, only
   once its items are known to be stored.

If any step fails (the database gone, or a reply lost after the write was
applied), the client gets an error and the job stays uncommitted. The same
request with the same idempotency key finishes it; without a retry,
:meth:`JobSubmitter.clean_abandoned` removes it after
:data:`ABANDONED_AFTER` (its items deleted, its reservation given back).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, timedelta

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from pipeline.catalog import ModelCatalog
from pipeline.clients import Quotas
from pipeline.errors import Conflict, PayloadTooLarge, QuotaExceeded
from pipeline.jobs.fallback_routes import resolve_routes, route_providers
from pipeline.jobs.item_ids import item_ids, new_item_base
from pipeline.jobs.shapes import JobOptions, new_item, new_job
from pipeline.jobs.validation import ItemSpec, ValidatedBatch, validate_items
from pipeline.logging import BusinessLogger, get_logger
from pipeline.prompts import PromptService
from pipeline.settings import Settings
from pipeline.spending import runs_spend
from pipeline.store import Store
from pipeline.store.by_id import delete_by_ids
from pipeline.store.document_collection import (
    Document,
    new_metadata,
    not_deleted,
    utcnow,
)
from pipeline.usage import ClientUsage, UsageDelta

log = get_logger(__name__)
business = BusinessLogger()

INSERT_BATCH = 1000
#: An uncommitted submission older than this was abandoned.
ABANDONED_AFTER = timedelta(minutes=10)
#: The ``submitting`` value of a submission being cleaned up.
ABANDONED = "abandoned"
#: MongoDB's duplicate key error code.
DUPLICATE_KEY = 11000


def request_hash(items: list[ItemSpec], options: JobOptions) -> str:
    """A fingerprint of a submission (to detect a reused idempotency key)."""
    body = json.dumps(
        # vars(), not asdict(): no deep copy of 100,000 items.
        [[vars(i) for i in items], vars(options)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


class JobSubmitter:
    """Validates and stores new jobs."""

    def __init__(
        self,
        store: Store,
        catalog: ModelCatalog,
        prompts: PromptService,
        settings: Settings,
    ) -> None:
        self._store = store
        self._jobs = store.raw("jobs")
        self._items = store.raw("items")
        self._usage = ClientUsage(store.raw("clients"))
        self._catalog = catalog
        self._prompts = prompts
        self._settings = settings

    async def submit(
        self,
        client_id: ObjectId,
        quotas: Quotas,
        items: list[ItemSpec],
        options: JobOptions,
    ) -> tuple[Document, bool]:
        """Store a job, or find the one its idempotency key made.

        Args:
            client_id: The authenticated client.
            quotas: Its quotas.
            items: The items, shape-checked.
            options: Job options.

        Returns:
            The job and whether it was committed now (False: the
            original job of a repeated idempotency key).

        Raises:
            PayloadTooLarge: More items than ``MAX_ITEMS_PER_JOB``.
            ValidationFailed: Any invalid item (nothing is written).
            QuotaExceeded: Over the pending-items quota or the budget.
            Conflict: The idempotency key was used for another body.
        """
        limit = self._settings.max_items_per_job
        if len(items) > limit:
            raise PayloadTooLarge(
                f"a job holds at most {limit} items, not {len(items)}"
            )
        fingerprint = None
        existing = None
        key = options.idempotency_key
        if key is not None:
            fingerprint = request_hash(items, options)
            existing = await self._by_key(client_id, key)
            if existing is not None:
                self._same_request(existing, fingerprint)
                if not existing.get("submitting"):
                    return existing, False
        batch = await validate_items(
            client_id, items, self._catalog, self._prompts
        )
        if existing is not None:
            # An earlier try stopped half-way: finish it.
            return await self._finish(existing, batch, quotas, options), True
        routes = (
            await resolve_routes(self._catalog, batch.fallbacks)
            if options.fallbacks
            else {}
        )
        job = new_job(
            ObjectId(),
            client_id,
            new_item_base(),
            len(items),
            options,
            batch.models,
            # The fallbacks' workers track the job too.
            sorted(set(batch.providers) | route_providers(routes)),
            fingerprint,
            estimated_cost=sum(batch.estimates),
            fallback_routes=routes,
        )
        try:
            await self._jobs.insert_one(job)
        except DuplicateKeyError:
            held = await self._key_holder(job)
            if held is None:
                await self._jobs.insert_one(job)  # the key was freed
            else:
                self._same_request(held, fingerprint)
                if not held.get("submitting"):
                    return held, False
                job = held
        return await self._finish(job, batch, quotas, options), True

    async def _finish(
        self,
        job: Document,
        batch: ValidatedBatch,
        quotas: Quotas,
        options: JobOptions,
    ) -> Document:
        """Steps 2 to 4 of a submission (module docstring)."""
        client_id, total = job["clientId"], job["totalItems"]
        if not job.get("reserved"):
            await self._reserve(job, quotas)
        metadata = new_metadata(f"client:{client_id}")
        documents = [
            new_item(
                job["_id"],
                client_id,
                job["itemBase"],
                seq,
                fields,
                options.max_attempts,
                metadata,
                estimated_cost=estimated_cost,
                mode=options.mode,
                deadline=job.get("deadline"),
                cache=options.cache,
            )
            for seq, (fields, estimated_cost) in enumerate(
                zip(batch.fields, batch.estimates, strict=True)
            )
        ]
        for start in range(0, len(documents), INSERT_BATCH):
            await self._insert_items(documents[start : start + INSERT_BATCH])
        result = await self._jobs.update_one(
            {"_id": job["_id"], "submitting": True},
            {
                "$set": {"active": True, "reserved": True},
                "$unset": {"submitting": ""},
            },
        )
        committed = {**job, "active": True, "reserved": True}
        committed.pop("submitting", None)
        if not result.matched_count:
            current = await self._jobs.find_one({"_id": job["_id"]})
            if current is None or current.get("submitting"):
                # Abandoned meanwhile (the clean-up took it over).
                await delete_by_ids(
                    self._items,
                    item_ids(job["itemBase"], 0, total),
                    jobId=job["_id"],
                )
                raise Conflict(
                    "this submission was abandoned and removed; submit "
                    "it again"
                )
            committed = current
        business.log_operation(
            "jobs", "submit", job_id=str(job["_id"]), items=total
        )
        return committed

    async def _reserve(self, job: Document, quotas: Quotas) -> None:
        """Reserve the job's room in its client's quotas, or remove it.

        Raises:
            QuotaExceeded: It does not fit (the job is deleted).
        """
        client_id = job["clientId"]
        other = (
            await runs_spend(self._store, client_id)
            if quotas.budget is not None
            else 0.0
        )
        try:
            await self._usage.reserve(
                client_id,
                quotas,
                job["_id"],
                job["totalItems"],
                job["reservation"]["cost"],
                other_spend=other,
            )
        except QuotaExceeded:
            await self._jobs.delete_one(
                {"_id": job["_id"], "submitting": True, "reserved": False}
            )
            raise
        await self._jobs.update_one(
            {"_id": job["_id"]}, {"$set": {"reserved": True}}
        )

    async def _insert_items(self, documents: list[Document]) -> None:
        """Insert items; those an earlier try stored are left as they are."""
        try:
            await self._items.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            errors = error.details.get("writeErrors") or []
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise

    async def _by_key(self, client_id: ObjectId, key: str) -> Document | None:
        return await self._jobs.find_one(
            not_deleted({"clientId": client_id, "idempotencyKey": key})
        )

    async def _key_holder(self, job: Document) -> Document | None:
        """The job that holds ``job``'s id or idempotency key.

        A deleted job still holding the key (deleted before deletes
        released keys) gives it up: None is returned then.
        """
        same_id = await self._jobs.find_one({"_id": job["_id"]})
        if same_id is not None:
            return same_id  # an insert retried after its reply was lost
        key = job.get("idempotencyKey")
        holder = await self._jobs.find_one(
            {"clientId": job["clientId"], "idempotencyKey": key}
        )
        if holder is None or not holder["_metadata"].get("isDeleted"):
            return holder
        await release_idempotency_key(self._jobs, holder["_id"], key)
        return None

    def _same_request(
        self, job: Document, fingerprint: str | None
    ) -> Document:
        if job.get("requestHash") != fingerprint:
            raise Conflict(
                "this idempotencyKey was used for a different job request",
                details={"jobId": str(job["_id"])},
            )
        return job

    async def clean_abandoned(self) -> int:
        """Remove submissions left uncommitted for :data:`ABANDONED_AFTER`.

        Their items are deleted and their reservation given back; a
        retry of the same request after that makes a new job.

        Returns:
            How many abandoned submissions were removed.
        """
        cutoff = utcnow() - ABANDONED_AFTER
        cleaned = 0
        # By the flag alone (its sparse index; the few uncommitted jobs
        # are then checked for age here).
        async for job in self._jobs.find(
            {"submitting": {"$in": [True, ABANDONED]}}
        ):
            created = job["_metadata"]["createdAt"].replace(tzinfo=UTC)
            if created >= cutoff:
                continue
            # Taken over first, so a late retry cannot commit it.
            await self._jobs.update_one(
                {"_id": job["_id"], "submitting": True},
                {"$set": {"submitting": ABANDONED}},
            )
            await self._abandon(job)
            cleaned += 1
        if cleaned:
            log.warning("abandoned_submissions_cleaned", count=cleaned)
        return cleaned

    async def _abandon(self, job: Document) -> None:
        ids = item_ids(job["itemBase"], 0, job["totalItems"])
        await delete_by_ids(self._items, ids, jobId=job["_id"])
        reserved = job.get("reserved") or await self._usage.has_reserved(
            job["clientId"], job["_id"]
        )
        if reserved:
            reservation = job["reservation"]
            await self._usage.apply(
                job["clientId"],
                f"abandon:{job['_id']}",
                UsageDelta(-reservation["items"], -reservation["cost"]),
            )
        await self._jobs.delete_one({"_id": job["_id"]})


async def release_idempotency_key(
    jobs: AsyncCollection[Document], job_id: ObjectId, key: str | None
) -> None:
    """Free a deleted job's idempotency key for a new job.

    The key stays on the deleted job as ``releasedIdempotencyKey``.
    """
    if key is None:
        return
    await jobs.update_one(
        {"_id": job_id, "idempotencyKey": key},
        {
            "$unset": {"idempotencyKey": ""},
            "$set": {"releasedIdempotencyKey": key},
        },
    )
