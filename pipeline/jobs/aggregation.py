"""Job aggregates: counts by status, tokens, cost, derived status.

A job's counters change in one atomic update per batch of item changes
(an aggregation-pipeline update), which also derives the job's status
from its counts in the same step:

* CANCELED, CONSUMED and ERROR_CONSUMING were set by the client and
  stay;
* items still PENDING or PROCESSING: PROCESSING once any item started,
  else PENDING;
* all items done: PROCESSED when at least one succeeded (``failed`` may
  be above zero), FAILED when all failed.

``active`` says whether the job still has work for the workers (pending
or running items); workers poll active jobs only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.states import STICKY_JOB_STATUSES, Status

S = Status

#: The statuses a job counts its items by.
COUNTED = (
    S.PENDING,
    S.PROCESSING,
    S.PROCESSED,
    S.FAILED,
    S.CANCELED,
)


def initial_counts(total: int) -> dict[str, int]:
    """Counts of a new job: everything pending."""
    counts = dict.fromkeys((s.value for s in COUNTED), 0)
    counts[S.PENDING] = total
    return counts


@dataclass
class JobDelta:
    """Changes to one job's aggregates, summed over a batch of items."""

    counts: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    started: bool = False

    def move(self, source: Status, target: Status, n: int = 1) -> None:
        """Record ``n`` items moving from ``source`` to ``target``."""
        self.counts[source] = self.counts.get(source, 0) - n
        self.counts[target] = self.counts.get(target, 0) + n

    def add_usage(
        self, input_tokens: int, output_tokens: int, cost: float
    ) -> None:
        """Record tokens and cost spent."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost += cost

    def is_empty(self) -> bool:
        """Whether applying it would change nothing."""
        return (
            not any(self.counts.values())
            and not self.input_tokens
            and not self.output_tokens
            and not self.cost
        )


def _field(name: str) -> Any:
    return {"$ifNull": [f"${name}", 0]}


def _counted(status: Status) -> Any:
    return _field(f"counts.{status}")


def derived_status() -> Any:
    """The aggregation expression deriving a job's status from counts."""
    unfinished = {"$add": [_counted(S.PENDING), _counted(S.PROCESSING)]}
    started = {
        "$add": [
            _counted(S.PROCESSING),
            _counted(S.PROCESSED),
            _counted(S.FAILED),
        ]
    }
    return {
        "$switch": {
            "branches": [
                {
                    "case": {
                        "$in": ["$status", [s.value for s in STICKY_JOB_STATUSES]]
                    },
                    "then": "$status",
                },
                {
                    "case": {"$gt": [unfinished, 0]},
                    "then": {
                        "$cond": [
                            {"$gt": [started, 0]},
                            S.PROCESSING.value,
                            S.PENDING.value,
                        ]
                    },
                },
                {
                    "case": {"$gt": [_counted(S.PROCESSED), 0]},
                    "then": S.PROCESSED.value,
                },
                {
                    "case": {"$gt": [_counted(S.FAILED), 0]},
                    "then": S.FAILED.value,
                },
            ],
            "default": "$status",
        }
    }


def refresh_stages() -> list[dict[str, Any]]:
    """Stages that re-derive ``status``, ``active`` and ``finishedAt``."""
    unfinished = {"$add": [_counted(S.PENDING), _counted(S.PROCESSING)]}
    return [
        {"$set": {"status": derived_status()}},
        {
            "$set": {
                "active": {"$gt": [unfinished, 0]},
                "finishedAt": {
                    "$cond": [
                        {"$gt": [unfinished, 0]},
                        None,
                        {"$ifNull": ["$finishedAt", "$$NOW"]},
                    ]
                },
                "_metadata.updatedAt": "$$NOW",
            }
        },
    ]


def update_pipeline(delta: JobDelta) -> list[dict[str, Any]]:
    """The update applying ``delta`` to a job and re-deriving its status.

    Args:
        delta: The changes.

    Returns:
        An aggregation-pipeline update for ``update_one``.
    """
    sets: dict[str, Any] = {
        f"counts.{status}": {"$add": [_field(f"counts.{status}"), n]}
        for status, n in delta.counts.items()
        if n
    }
    if delta.input_tokens or delta.output_tokens:
        sets["usage.inputTokens"] = {
            "$add": [_field("usage.inputTokens"), delta.input_tokens]
        }
        sets["usage.outputTokens"] = {
            "$add": [_field("usage.outputTokens"), delta.output_tokens]
        }
    if delta.cost:
        sets["cost"] = {"$add": [_field("cost"), delta.cost]}
    if delta.started:
        sets["startedAt"] = {"$ifNull": ["$startedAt", "$$NOW"]}
    stages: list[dict[str, Any]] = [{"$set": sets}] if sets else []
    return stages + refresh_stages()


def derive_status(job: Mapping[str, Any]) -> Status:
    """The same derivation in Python (for documents read back)."""
    status = Status(job["status"])
    if status in STICKY_JOB_STATUSES:
        return status
    counts = job.get("counts") or {}
    unfinished = counts.get(S.PENDING, 0) + counts.get(S.PROCESSING, 0)
    if unfinished:
        started = sum(
            counts.get(s, 0) for s in (S.PROCESSING, S.PROCESSED, S.FAILED)
        )
        return S.PROCESSING if started else S.PENDING
    if counts.get(S.PROCESSED, 0):
        return S.PROCESSED
    if counts.get(S.FAILED, 0):
        return S.FAILED
    return status
