"""Job aggregates: counts by status, tokens, cost, derived status.

Only what cannot be derived is stored: the counts of items in a final
status (PROCESSED, FAILED, CANCELED), tokens and cost. The rest follows:

* PROCESSING = the job's items under a lease (a small indexed query);
* PENDING = total - PROCESSING - the final counts.

So claiming an item, retrying it or taking back an expired lease never
touches the job document; only reaching or leaving a final status does.
Each such change is one atomic pipeline update of the job that also
re-derives its status:

* CANCELED, CONSUMED and ERROR_CONSUMING were set by the client and stay;
* unfinished items left: PROCESSING once the job started, else PENDING;
* all items final: PROCESSED when at least one succeeded (``failed`` may
  be above zero), FAILED when all failed.

``answersByModel`` counts, per catalog model, the items it answered
(PROCESSED): with fallbacks (:mod:`pipeline.worker.fallback`) a job's
answers may come from several models.

``active`` says whether the job still has unfinished items or counter
updates in flight (journal entries, see :mod:`pipeline.worker.journal`);
workers poll active jobs only, so an entry a dead writer left is always
found and settled, even when the items it moves were counted final.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.states import STICKY_JOB_STATUSES, Status

S = Status

#: The statuses whose counts a job stores.
FINAL_COUNTED = (S.PROCESSED, S.FAILED, S.CANCELED)


def initial_counts() -> dict[str, int]:
    """Stored counts of a new job."""
    return dict.fromkeys((s.value for s in FINAL_COUNTED), 0)


@dataclass
class JobDelta:
    """Changes to one job's stored aggregates."""

    counts: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)

    def move(self, source: Status, target: Status, n: int = 1) -> None:
        """Record ``n`` items moving from ``source`` to ``target``."""
        if source in FINAL_COUNTED:
            self.counts[source] = self.counts.get(source, 0) - n
        if target in FINAL_COUNTED:
            self.counts[target] = self.counts.get(target, 0) + n

    def add_usage(
        self, input_tokens: int, output_tokens: int, cost: float
    ) -> None:
        """Record tokens and cost spent."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost += cost

    def answered(self, model: str, n: int = 1) -> None:
        """Record ``n`` answers by ``model`` (a catalog model name)."""
        self.answers[model] = self.answers.get(model, 0) + n

    def reversed(self) -> JobDelta:
        """The delta that undoes this one."""
        return JobDelta(
            counts={k: -v for k, v in self.counts.items()},
            input_tokens=-self.input_tokens,
            output_tokens=-self.output_tokens,
            cost=-self.cost,
            answers={k: -v for k, v in self.answers.items()},
        )

    def is_empty(self) -> bool:
        """Whether applying it would change nothing."""
        return (
            not any(self.counts.values())
            and not self.input_tokens
            and not self.output_tokens
            and not self.cost
            and not any(self.answers.values())
        )


def _field(name: str) -> Any:
    return {"$ifNull": [f"${name}", 0]}


def _answers(answers: Mapping[str, int]) -> Any:
    """The expression adding ``answers`` to ``answersByModel``.

    Through ``$setField``/``$getField``: a model name may hold a dot,
    which a field path would read as nesting.
    """
    stored = {"$ifNull": ["$answersByModel", {}]}
    expression: Any = stored
    for model, n in sorted(answers.items()):
        name = {"$literal": model}
        current = {"$getField": {"field": name, "input": stored}}
        expression = {
            "$setField": {
                "field": name,
                "input": expression,
                "value": {"$add": [{"$ifNull": [current, 0]}, n]},
            }
        }
    return expression


def _unfinished() -> Any:
    return {
        "$subtract": [
            "$totalItems",
            {"$add": [_field(f"counts.{s}") for s in FINAL_COUNTED]},
        ]
    }


def derived_status() -> Any:
    """The aggregation expression deriving a job's status."""
    return {
        "$switch": {
            "branches": [
                {
                    "case": {
                        "$in": [
                            "$status",
                            [s.value for s in STICKY_JOB_STATUSES],
                        ]
                    },
                    "then": "$status",
                },
                {
                    "case": {"$gt": [_unfinished(), 0]},
                    "then": {
                        "$cond": [
                            {"$eq": [{"$ifNull": ["$startedAt", None]}, None]},
                            S.PENDING.value,
                            S.PROCESSING.value,
                        ]
                    },
                },
                {
                    "case": {"$gt": [_field(f"counts.{S.PROCESSED}"), 0]},
                    "then": S.PROCESSED.value,
                },
                {
                    "case": {"$gt": [_field(f"counts.{S.FAILED}"), 0]},
                    "then": S.FAILED.value,
                },
            ],
            "default": "$status",
        }
    }


def refresh_stages() -> list[dict[str, Any]]:
    """Stages re-deriving ``status``, ``active`` and ``finishedAt``."""
    unfinished = _unfinished()
    journaled = {"$gt": [{"$size": {"$ifNull": ["$journal", []]}}, 0]}
    return [
        {"$set": {"status": derived_status()}},
        {
            "$set": {
                "active": {"$or": [{"$gt": [unfinished, 0]}, journaled]},
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


def update_pipeline(
    delta: JobDelta,
    *,
    journal_add: Mapping[str, Any] | None = None,
    journal_drop: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The update applying ``delta`` and re-deriving the status.

    Args:
        delta: Changes to the stored aggregates.
        journal_add: A journal entry to record with them (see
            :mod:`pipeline.worker.journal`).
        journal_drop: Batch ids of journal entries to remove.

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
    if any(delta.answers.values()):
        sets["answersByModel"] = _answers(
            {m: n for m, n in delta.answers.items() if n}
        )
    if journal_add is not None or journal_drop:
        kept = {
            "$filter": {
                "input": {"$ifNull": ["$journal", []]},
                "cond": {"$not": [{"$in": ["$$this.b", list(journal_drop)]}]},
            }
        }
        added = [{"$literal": journal_add}] if journal_add is not None else []
        sets["journal"] = {"$concatArrays": [kept, added]}
    stages: list[dict[str, Any]] = [{"$set": sets}] if sets else []
    return stages + refresh_stages()


def started_pipeline() -> list[dict[str, Any]]:
    """The update marking a job started (first claim of its items)."""
    return [
        {"$set": {"startedAt": {"$ifNull": ["$startedAt", "$$NOW"]}}},
        *refresh_stages(),
    ]


def full_counts(job: Mapping[str, Any], processing: int) -> dict[str, int]:
    """Counts of every status, the derived ones included.

    Args:
        job: The stored job.
        processing: Its items under a lease right now.

    Returns:
        PENDING, PROCESSING, PROCESSED, FAILED, CANCELED.
    """
    stored = job.get("counts") or {}
    final = {s.value: int(stored.get(s, 0)) for s in FINAL_COUNTED}
    unfinished = max(0, job["totalItems"] - sum(final.values()))
    # The job and its leases are two reads, moments apart (and a
    # requeued item may be claimed just before its counts move): the
    # counts shown still add up to the total.
    processing = min(processing, unfinished)
    return {
        S.PENDING.value: unfinished - processing,
        S.PROCESSING.value: processing,
        **final,
    }


def derive_status(job: Mapping[str, Any]) -> Status:
    """The same derivation in Python (for documents read back)."""
    status = Status(job["status"])
    if status in STICKY_JOB_STATUSES:
        return status
    counts = job.get("counts") or {}
    unfinished = job["totalItems"] - sum(
        counts.get(s, 0) for s in FINAL_COUNTED
    )
    if unfinished > 0:
        return S.PENDING if job.get("startedAt") is None else S.PROCESSING
    if counts.get(S.PROCESSED, 0):
        return S.PROCESSED
    if counts.get(S.FAILED, 0):
        return S.FAILED
    return status
