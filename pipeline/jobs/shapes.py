"""The stored shape of jobs and items (field names in one place)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

from bson import ObjectId

from pipeline.jobs.aggregation import initial_counts
from pipeline.jobs.fallback_routes import (
    Route,
    Routes,
    routes_from_doc,
    routes_to_doc,
)
from pipeline.jobs.item_ids import item_id
from pipeline.states import Status
from pipeline.store.document_collection import Document, new_metadata
from providers.batch import has_batch_api

#: Attempts per item when nothing says otherwise: the API's default for
#: ``maxAttempts``. Every job and item stores its own, so readers fall
#: back on this only for a document written without one, and then treat
#: it like a job submitted without the option.
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class JobOptions:
    """Options a client gives for a whole job.

    Attributes:
        mode: ``live``, ``batch`` or ``auto`` (:mod:`pipeline.jobs.mode`).
        deadline: How long the job may take, or None.
        fallbacks: Whether items may move to their model's fallbacks
            while its provider is down (:mod:`pipeline.worker.fallback`).
    """

    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    cache: bool = False
    idempotency_key: str | None = None
    mode: str = "live"
    deadline: timedelta | None = None
    fallbacks: bool = True


def new_job(
    job_id: ObjectId,
    client_id: ObjectId,
    item_base: ObjectId,
    total: int,
    options: JobOptions,
    models: list[str],
    providers: list[str],
    request_hash: str | None,
    *,
    estimated_cost: float = 0.0,
    fallback_routes: Routes | None = None,
) -> Document:
    """A job document, ready to insert, not yet committed.

    It is ``submitting`` (ignored by workers and listings) until its
    items are stored (:mod:`pipeline.jobs.submission`); ``reservation``
    is what it holds of its client's quotas. ``providers`` must include
    the providers of the ``fallback_routes``
    (:mod:`pipeline.jobs.fallback_routes`).
    """
    job: Document = {
        "_id": job_id,
        "clientId": client_id,
        "status": Status.PENDING.value,
        "submitting": True,
        "active": False,
        "reserved": False,
        "reservation": {"items": total, "cost": estimated_cost},
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
        "fallbacks": options.fallbacks,
        "fallbackRoutes": routes_to_doc(fallback_routes or {}),
        "answersByModel": {},
        "requeues": 0,
        "startedAt": None,
        "finishedAt": None,
        "mode": options.mode,
        "deadline": (
            job_id.generation_time + options.deadline
            if options.deadline is not None
            else None
        ),
        # Providers without a batch API run a batch job's items live.
        "liveOnlyProviders": (
            []
            if options.mode == "live"
            else [p for p in providers if not has_batch_api(p)]
        ),
        "_metadata": new_metadata(f"client:{client_id}"),
    }
    if options.idempotency_key is not None:
        job["idempotencyKey"] = options.idempotency_key
        job["requestHash"] = request_hash
    return job


class StoredItem(TypedDict, total=False):
    """An item document as stored (``new_item`` writes it; workers move it).

    ``_id``, ``jobId``, ``clientId``, ``seq``, ``model``, ``userContent``,
    ``status``, ``attempts`` and ``maxAttempts`` are always there; the
    rest depend on the request (``promptId`` and ``promptVersion`` for a
    saved prompt, else ``systemPrompt``) and on where the item is in its
    life (a lease while PROCESSING, ``nextAttemptAt`` before a retry).
    Read with the projection a reader names, so a read may hold fewer.
    """

    _id: ObjectId
    jobId: ObjectId
    clientId: ObjectId
    seq: int
    customId: str | None
    model: str
    promptId: ObjectId
    promptVersion: int
    systemPrompt: str | None
    userContent: str
    temperature: float | None
    maxTokens: int | None
    status: str
    attempts: int
    maxAttempts: int
    estCost: float
    mode: str
    deadline: datetime
    cache: bool
    leaseOwner: str
    leaseExpiresAt: datetime
    startedAt: datetime
    nextAttemptAt: datetime | None
    finishedAt: datetime | None
    requeues: int
    result: dict[str, Any]
    error: dict[str, Any] | None
    requestedModel: str
    fallbackFrom: list[str]
    _metadata: Document


def new_item(
    job_id: ObjectId,
    client_id: ObjectId,
    item_base: ObjectId,
    seq: int,
    fields: dict[str, Any],
    max_attempts: int,
    metadata: Document,
    *,
    estimated_cost: float = 0.0,
    mode: str = "live",
    deadline: datetime | None = None,
    cache: bool = False,
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
        estimated_cost: Its estimated cost (USD), reserved of its
            client's budget until it reaches a final status.
        mode: The job's mode; stored on the item unless ``live``, so a
            worker's window read tells batch items apart.
        deadline: The job's deadline, stored with the mode: a worker
            decides batch or live, and when to leave a batch, by item.
        cache: The job's ``cache`` option, stored with the mode: a
            provider batch serves and fills the result cache by item.

    Returns:
        The document.
    """
    item: Document = {
        "_id": item_id(item_base, seq),
        "jobId": job_id,
        "clientId": client_id,
        "seq": seq,
        **fields,
        "status": Status.PENDING.value,
        "attempts": 0,
        "maxAttempts": max_attempts,
        "estCost": estimated_cost,
        "_metadata": metadata,
    }
    if mode != "live":
        item["mode"] = mode
        if deadline is not None:
            item["deadline"] = deadline
        if cache:
            item["cache"] = True
    return item


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
    "mode",
    "deadline",
    "fallbackRoutes",
    "_metadata",
)


@dataclass(frozen=True)
class JobSummary:
    """A job as workers see it: its :data:`SUMMARY_FIELDS`, typed.

    Read with :meth:`from_doc` wherever a job's summary is read, so every
    reader gets the same defaults; :meth:`to_doc` is what a worker is
    sent (a plain document: it crosses a Ray boundary).

    Attributes:
        id: The job.
        client_id: Its owner.
        total_items: Items in the job.
        item_base: The base of its item ids.
        status: Its status.
        priority: Higher goes first within its client.
        max_attempts: Attempts per item.
        cache: Whether results may come from the result cache.
        providers: Providers of its models (None: not recorded, so
            every provider's worker looks at it).
        models: Its models.
        requeues: Requeue generation (how many requeues were asked).
        deleted: Soft-deleted by its client.
        started_at: When its first item was claimed.
        mode: ``live``, ``batch`` or ``auto``.
        deadline: When the job must be done, or None.
        fallback_routes: Per model, where its items go while it is down
            (:mod:`pipeline.jobs.fallback_routes`).
    """

    id: ObjectId
    client_id: ObjectId
    total_items: int
    item_base: ObjectId
    status: Status
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    cache: bool = False
    providers: tuple[str, ...] | None = None
    models: tuple[str, ...] = ()
    requeues: int = 0
    deleted: bool = False
    started_at: datetime | None = None
    mode: str = "live"
    deadline: datetime | None = None
    fallback_routes: dict[str, tuple[Route, ...]] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> JobSummary:
        """Read a stored job, or a summary a worker was sent."""
        providers = doc.get("providers")
        return cls(
            id=doc["_id"],
            client_id=doc["clientId"],
            total_items=doc["totalItems"],
            item_base=doc["itemBase"],
            status=Status(doc["status"]),
            priority=doc.get("priority", 0),
            max_attempts=doc.get("maxAttempts", DEFAULT_MAX_ATTEMPTS),
            cache=bool(doc.get("cache", False)),
            providers=None if providers is None else tuple(providers),
            models=tuple(doc.get("models") or ()),
            requeues=doc.get("requeues", 0),
            deleted=bool((doc.get("_metadata") or {}).get("isDeleted")),
            started_at=doc.get("startedAt"),
            mode=doc.get("mode", "live"),
            deadline=doc.get("deadline"),
            fallback_routes=routes_from_doc(doc.get("fallbackRoutes")),
        )

    def to_doc(self) -> Document:
        """The summary as a document (stored field names)."""
        doc: Document = {
            "_id": self.id,
            "clientId": self.client_id,
            "priority": self.priority,
            "totalItems": self.total_items,
            "itemBase": self.item_base,
            "maxAttempts": self.max_attempts,
            "cache": self.cache,
            "models": list(self.models),
            "status": self.status.value,
            "requeues": self.requeues,
            "_metadata": {"isDeleted": self.deleted},
            "startedAt": self.started_at,
            "mode": self.mode,
            "deadline": self.deadline,
            "fallbackRoutes": routes_to_doc(self.fallback_routes),
        }
        if self.providers is not None:
            doc["providers"] = list(self.providers)
        return doc


def job_summary(job: Document) -> Document:
    """What a worker is told about a new or changed job."""
    return JobSummary.from_doc(job).to_doc()
