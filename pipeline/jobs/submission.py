"""Submitting a job: quotas, idempotency, then an all-or-nothing insert.

Items are inserted first (in batches), then the job document, which is
the commit point: workers find items only through their job, so items
of a submission that failed half-way are never processed. They are
deleted at once, or, if the process died, by :meth:`JobSubmitter.
clean_abandoned` (an ``ingestions`` record marks every submission in
progress).
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from bson import ObjectId
from pymongo.errors import DuplicateKeyError, PyMongoError

from pipeline.catalog import ModelCatalog
from pipeline.clients import Quotas
from pipeline.errors import Conflict, PayloadTooLarge, QuotaExceeded
from pipeline.jobs.item_ids import item_ids, new_item_base
from pipeline.jobs.shapes import JobOptions, new_item, new_job
from pipeline.jobs.validation import ItemSpec, validate_items
from pipeline.logging import BusinessLogger, get_logger
from pipeline.prompts import PromptService
from pipeline.settings import Settings
from pipeline.spending import client_spend
from pipeline.store import Store, safe_operation
from pipeline.store.by_id import delete_by_ids
from pipeline.store.document_collection import (
    Document,
    new_metadata,
    not_deleted,
    utcnow,
)

log = get_logger(__name__)
business = BusinessLogger()

INSERT_BATCH = 1000
#: A submission still unfinished after this long was abandoned.
ABANDONED_AFTER = timedelta(minutes=10)
#: Retry-After for a client over its pending-items quota, in seconds.
PENDING_QUOTA_RETRY_S = 30


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
        self._ingestions = store.raw("ingestions")
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
            The job and whether it was created now (False: the original
            job of a repeated idempotency key).

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
        if options.idempotency_key is not None:
            fingerprint = request_hash(items, options)
            existing = await self._by_key(client_id, options.idempotency_key)
            if existing is not None:
                return self._same_request(existing, fingerprint), False
        batch = await validate_items(
            client_id, items, self._catalog, self._prompts
        )
        await self._check_quotas(client_id, quotas, len(items))

        job_id, item_base = ObjectId(), new_item_base()
        job = new_job(
            job_id,
            client_id,
            item_base,
            len(items),
            options,
            batch.models,
            batch.providers,
            fingerprint,
        )
        metadata = new_metadata(f"client:{client_id}")
        documents = [
            new_item(
                job_id,
                client_id,
                item_base,
                seq,
                fields,
                options.max_attempts,
                metadata,
                options.mode,
            )
            for seq, fields in enumerate(batch.fields)
        ]
        ingestion = {
            "_id": job_id,
            "clientId": client_id,
            "itemBase": item_base,
            "totalItems": len(items),
            "startedAt": utcnow(),
        }
        await safe_operation(
            lambda: self._ingestions.insert_one(ingestion),
            what="start ingestion",
        )
        try:
            for start in range(0, len(documents), INSERT_BATCH):
                await self._items.insert_many(
                    documents[start : start + INSERT_BATCH], ordered=False
                )
            await self._jobs.insert_one(job)
        except DuplicateKeyError:
            # A concurrent submit with the same idempotency key won.
            await self._discard(ingestion)
            winner = await self._by_key(
                client_id, options.idempotency_key or ""
            )
            if winner is None:
                raise
            return self._same_request(winner, fingerprint), False
        except PyMongoError:
            await self._discard(ingestion)
            raise
        await self._ingestions.delete_one({"_id": job_id})
        business.log_operation(
            "jobs", "submit", job_id=str(job_id), items=len(items)
        )
        return job, True

    async def _by_key(self, client_id: ObjectId, key: str) -> Document | None:
        return await self._jobs.find_one(
            not_deleted({"clientId": client_id, "idempotencyKey": key})
        )

    def _same_request(
        self, job: Document, fingerprint: str | None
    ) -> Document:
        if job.get("requestHash") != fingerprint:
            raise Conflict(
                "this idempotencyKey was used for a different job request",
                details={"jobId": str(job["_id"])},
            )
        return job

    async def _check_quotas(
        self, client_id: ObjectId, quotas: Quotas, new_items: int
    ) -> None:
        max_pending = quotas.max_pending_items
        budget = quotas.budget
        if max_pending is not None:
            jobs = await self._jobs.find(
                {"clientId": client_id},
                {"counts": 1, "active": 1, "totalItems": 1},
            ).to_list()
            pending = sum(
                j["totalItems"] - sum(j["counts"].values())
                for j in jobs
                if j.get("active")
            )
            if pending + new_items > max_pending:
                raise QuotaExceeded(
                    f"{pending} items are pending; the quota is {max_pending}",
                    retry_after=PENDING_QUOTA_RETRY_S,
                )
        if budget is not None:
            spent = await client_spend(self._store, client_id)
            if spent >= budget:
                raise QuotaExceeded(
                    f"the budget of {budget} USD is spent ({spent:.4f} USD)",
                    retry_after=3600,
                )

    async def _discard(self, ingestion: Document) -> None:
        """Remove what a failed submission wrote (best effort).

        Only items of this job go: the ``jobId`` condition spares the
        items of another job whose ids a clash of item bases gave.
        """
        job_id = ingestion["_id"]
        ids = item_ids(ingestion["itemBase"], 0, ingestion["totalItems"])
        try:
            await delete_by_ids(self._items, ids, jobId=job_id)
            await self._ingestions.delete_one({"_id": job_id})
        except PyMongoError as error:
            log.warning(
                "ingestion_cleanup_deferred",
                job_id=str(job_id),
                error=str(error),
            )

    async def clean_abandoned(self) -> int:
        """Delete items of submissions whose process died half-way.

        Returns:
            How many abandoned submissions were cleaned.
        """
        cutoff = utcnow() - ABANDONED_AFTER
        cleaned = 0
        async for record in self._ingestions.find(
            {"startedAt": {"$lt": cutoff}}
        ):
            if await self._jobs.find_one({"_id": record["_id"]}, {"_id": 1}):
                await self._ingestions.delete_one({"_id": record["_id"]})
                continue
            await self._discard(record)
            cleaned += 1
        if cleaned:
            log.warning("abandoned_submissions_cleaned", count=cleaned)
        return cleaned
