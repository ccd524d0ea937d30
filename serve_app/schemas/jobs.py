"""Bodies of the job endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from pipeline.jobs.aggregation import full_counts
from pipeline.jobs.item_input import JobItemIn
from pipeline.jobs.shapes import DEFAULT_MAX_ATTEMPTS, JobSummary
from serve_app.schemas.common import ApiModel, RequestModel, metadata_times


class JobCreate(RequestModel):
    """``POST /jobs``."""

    items: list[JobItemIn] = Field(min_length=1)
    priority: int = Field(0, ge=-1000, le=1000)
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=20)
    cache: bool = False
    idempotency_key: str | None = Field(None, min_length=1, max_length=256)
    mode: Literal["live", "batch", "auto"] | None = Field(
        None,
        description="live calls (default), the providers' batch APIs "
        "(about half the price, within 24h), or auto: batch while the "
        "deadline allows",
    )
    deadline: str | None = Field(
        None,
        max_length=16,
        description="how long the job may take, e.g. 24h (alone: auto)",
    )
    fallbacks: bool = Field(
        True,
        description="items may move to their model's catalog fallbacks "
        "while its provider is down or out of capacity; false: never",
    )


class Usage(ApiModel):
    """Tokens spent (cached results excluded)."""

    input_tokens: int = 0
    output_tokens: int = 0


class JobOut(ApiModel):
    """A job and its aggregates."""

    id: str
    status: str
    total_items: int
    counts: dict[str, int]
    progress: float = Field(description="share of items in a final status")
    usage: Usage
    cost: float
    priority: int
    max_attempts: int
    cache: bool
    idempotency_key: str | None
    models: list[str]
    mode: str
    deadline: datetime | None
    live_only_providers: list[str] = Field(
        description="providers without a batch API: their items run live"
    )
    fallbacks: bool = Field(
        description="whether items may move to their model's fallbacks"
    )
    answers_by_model: dict[str, int] = Field(
        description="items answered (PROCESSED), per catalog model that "
        "answered them"
    )
    requeues: int
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    canceled_at: datetime | None
    consumed_at: datetime | None

    @classmethod
    def from_doc(cls, job: dict[str, Any], processing: int = 0) -> JobOut:
        """Build from a stored job and its items under lease."""
        counts = full_counts(job, processing)
        summary = JobSummary.from_doc(job)
        total = job["totalItems"]
        unfinished = counts["PENDING"] + counts["PROCESSING"]
        return cls(
            id=str(job["_id"]),
            status=job["status"],
            total_items=total,
            counts=counts,
            progress=round((total - unfinished) / total, 4) if total else 1.0,
            usage=Usage.model_validate(job.get("usage") or {}),
            cost=round(job.get("cost", 0.0), 8),
            priority=summary.priority,
            max_attempts=summary.max_attempts,
            cache=summary.cache,
            idempotency_key=job.get("idempotencyKey"),
            models=list(summary.models),
            mode=summary.mode,
            deadline=summary.deadline,
            live_only_providers=list(job.get("liveOnlyProviders") or []),
            fallbacks=bool(job.get("fallbacks", True)),
            answers_by_model=dict(job.get("answersByModel") or {}),
            requeues=summary.requeues,
            started_at=summary.started_at,
            finished_at=job.get("finishedAt"),
            canceled_at=job.get("canceledAt"),
            consumed_at=job.get("consumedAt"),
            **metadata_times(job),
        )


class JobList(ApiModel):
    """``GET /jobs``: newest first; pass ``nextCursor`` as ``cursor``."""

    items: list[JobOut]
    next_cursor: str | None


class ItemResult(ApiModel):
    """A successful item's answer."""

    text: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost: float = 0.0
    cached: bool = False
    via: Literal["live", "batch"] = Field(
        "live",
        description="how it was answered: a live call, or the provider's "
        "batch API (at the model's batch price)",
    )
    model: str | None = Field(
        None, description="the model name the provider reported"
    )
    served_by: str | None = Field(
        None,
        description="the catalog model that answered: the item's model, "
        "or one of its fallbacks",
    )


class ItemError(ApiModel):
    """Why an item failed (or why its last attempt did)."""

    type: str
    message: str
    retryable: bool
    status_code: int | None = None


class ItemOut(ApiModel):
    """One item of a job's results."""

    id: str
    custom_id: str | None
    seq: int
    model: str = Field(description="the model the item was submitted for")
    fallback_from: list[str] = Field(
        default_factory=list,
        description="models that gave up on the item before the one "
        "that answered it or now holds it (its provider was down)",
    )
    status: str
    attempts: int
    result: ItemResult | None
    error: ItemError | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_doc(cls, item: dict[str, Any]) -> ItemOut:
        """Build from a stored item."""
        result = item.get("result")
        error = item.get("error")
        return cls(
            id=str(item["_id"]),
            custom_id=item.get("customId"),
            seq=item["seq"],
            model=item.get("requestedModel") or item["model"],
            fallback_from=list(item.get("fallbackFrom") or []),
            status=item["status"],
            attempts=item.get("attempts", 0),
            result=ItemResult.model_validate(result) if result else None,
            error=ItemError.model_validate(error) if error else None,
            started_at=item.get("startedAt"),
            finished_at=item.get("finishedAt"),
        )


class ResultsPage(ApiModel):
    """``GET /jobs/{id}/results``: pass ``nextCursor`` as ``cursor``."""

    items: list[ItemOut]
    next_cursor: str | None


class RequeueOut(ApiModel):
    """``POST /admin/jobs/{id}/requeue``: accepted, done by the workers."""

    id: str
    failed_items: int
    requeues: int
