"""What the batch driver needs of the service: the ``JobsBackend`` protocol.

The driver validates, submits, pages results and cancels through this
protocol only, so the same driver runs over HTTP against a running
service (:mod:`pipeline.batch.http_backend`) or straight on the
database and the Ray cluster (:mod:`pipeline.batch.direct_backend`).
Both raise the domain errors of :mod:`pipeline.errors`: a refused key
is ``Unauthorized``, a quota ``QuotaExceeded``, an outage
``Unavailable``, a refused job ``ValidationFailed`` or ``Conflict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pipeline.jobs.shapes import JobOptions
from pipeline.jobs.validation import ItemSpec
from pipeline.states import Status

#: Item statuses after which an item's result no longer changes.
FINAL_STATUSES = frozenset({Status.PROCESSED, Status.FAILED, Status.CANCELED})


@dataclass(frozen=True)
class PromptInfo:
    """What validating an item needs of a stored prompt."""

    user_template: str | None


@dataclass(frozen=True)
class ResultItem:
    """One item of a job's results, as the driver writes it out."""

    id: str
    custom_id: str | None
    model: str
    status: str
    text: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    error_type: str | None = None
    error_message: str | None = None
    finished_at: datetime | None = None

    @property
    def final(self) -> bool:
        """Whether the item is done (processed, failed or canceled)."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ResultItem:
        """Read an item of ``GET /jobs/{id}/results`` or a stored item.

        Both are camelCase; the API names the id ``id``, the database
        ``_id``, and the API gives times as ISO text.
        """
        result = doc.get("result") or {}
        error = doc.get("error") or {}
        finished = doc.get("finishedAt")
        if isinstance(finished, str):
            finished = datetime.fromisoformat(finished)
        return cls(
            id=str(doc["id"] if "id" in doc else doc["_id"]),
            custom_id=doc.get("customId"),
            # The model asked for (a stored item names its fallback's
            # once it moved: see pipeline.worker.fallback).
            model=doc.get("requestedModel") or doc["model"],
            status=doc["status"],
            text=result.get("text"),
            finish_reason=result.get("finishReason"),
            input_tokens=result.get("inputTokens", 0),
            output_tokens=result.get("outputTokens", 0),
            cost=result.get("cost", 0.0),
            error_type=error.get("type"),
            error_message=error.get("message"),
            finished_at=finished,
        )


class JobsBackend(Protocol):
    """Jobs of one client, reached over some transport."""

    @property
    def target(self) -> str:
        """Where the jobs live (a URL, or ``local``), for the state file."""
        ...

    @property
    def max_job_items(self) -> int | None:
        """The most items a job may hold, when the backend knows it."""
        ...

    async def model_names(self) -> set[str]:
        """Names of the active models of the catalog."""
        ...

    async def prompt(
        self, prompt_id: str, version: int | None
    ) -> PromptInfo | None:
        """The client's prompt (a version, or the latest), if it exists."""
        ...

    async def submit(self, items: list[ItemSpec], options: JobOptions) -> str:
        """Submit a job, or find the one its idempotency key made.

        Returns:
            The job's id.
        """
        ...

    async def results(
        self, job_id: str, cursor: int, limit: int
    ) -> list[ResultItem]:
        """Items ``cursor`` to ``cursor + limit`` of a job, in order."""
        ...

    async def find_job(self, key: str) -> str | None:
        """The client's job made with this idempotency key, if any."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Cancel a job's pending items (a finished job is left alone)."""
        ...

    async def consume(self, job_id: str) -> str:
        """Mark a processed job's results as consumed.

        Returns:
            The job's status after the call: ``CONSUMED``, or the status
            that did not allow it (still ``PROCESSING`` while its
            counters catch up with its items; ``FAILED``, ``CANCELED``).
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
