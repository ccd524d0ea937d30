"""The stored shape of jobs and items (field names in one place)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from pipeline.jobs.aggregation import initial_counts
from pipeline.jobs.item_ids import item_id
from pipeline.states import Status
from pipeline.store.document_collection import Document, new_metadata


@dataclass(frozen=True)
class JobOptions:
    """Options a client gives for a whole job."""

    priority: int = 0
    max_attempts: int = 3
    cache: bool = False
    idempotency_key: str | None = None


def new_job(
    job_id: ObjectId,
    client_id: ObjectId,
    item_base: ObjectId,
    total: int,
    options: JobOptions,
    models: list[str],
    providers: list[str],
    request_hash: str | None,
) -> Document:
    """A job document, ready to insert (the commit point of a submit)."""
    job: Document = {
        "_id": job_id,
        "clientId": client_id,
        "status": Status.PENDING.value,
        "active": True,
        "totalItems": total,
        "itemBase": item_base,
        "counts": initial_counts(),
        "usage": {"inputTokens": 0, "outputTokens": 0},
        "cost": 0.0,
        "priority": options.priority,
        "maxAttempts": options.max_attempts,
        "cache": options.cache,
        "models": models,
        "providers": providers,
        "requeues": 0,
        "startedAt": None,
        "finishedAt": None,
        "_metadata": new_metadata(f"client:{client_id}"),
    }
    if options.idempotency_key is not None:
        job["idempotencyKey"] = options.idempotency_key
        job["requestHash"] = request_hash
    return job


def new_item(
    job_id: ObjectId,
    client_id: ObjectId,
    item_base: ObjectId,
    seq: int,
    fields: dict[str, Any],
    max_attempts: int,
    metadata: Document,
) -> Document:
    """An item document; ``fields`` holds the validated, rendered request.

    Args:
        job_id: Its job.
        client_id: The owner.
        item_base: The job's item base: the item's ``_id`` follows.
        seq: Position in the job (0-based): the results order.
        fields: ``customId``, ``model``, ``promptId``/``promptVersion``
            or ``systemPrompt``, ``userContent``, ``temperature``,
            ``maxTokens``.
        max_attempts: Attempts allowed.
        metadata: The shared ``_metadata`` block of the batch.

    Returns:
        The document.
    """
    return {
        "_id": item_id(item_base, seq),
        "jobId": job_id,
        "clientId": client_id,
        "seq": seq,
        **fields,
        "status": Status.PENDING.value,
        "attempts": 0,
        "maxAttempts": max_attempts,
        "_metadata": metadata,
    }


#: Job fields a worker needs to track a job (no item data).
SUMMARY_FIELDS = (
    "_id",
    "clientId",
    "priority",
    "totalItems",
    "itemBase",
    "maxAttempts",
    "cache",
    "providers",
    "models",
    "status",
    "requeues",
    "_metadata",
)


def job_summary(job: Document) -> Document:
    """What a worker is told about a new or changed job."""
    return {key: job[key] for key in SUMMARY_FIELDS if key in job}
