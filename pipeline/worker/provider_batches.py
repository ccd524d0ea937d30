"""Items through the providers' batch APIs: the design, and its first parts.

Jobs that can wait (``mode: "batch"``, or ``"auto"`` with a far
``deadline``) send their items to the vendors' batch APIs
(:mod:`providers.batch`) at about half the price. Nothing else about
jobs, items, results or guarantees changes; this part sits beside the
live engine (:mod:`pipeline.worker.engine`), not inside it.

Job options (:mod:`pipeline.jobs.mode`)
    ``mode``: ``live`` (default), ``batch`` or ``auto``; ``deadline``: a
    duration (``"24h"``) stored as an instant. Every item stores its
    job's mode and deadline, so a worker's window read tells batch
    items from live ones. A model whose provider has no batch API
    (``azure_inference``, plugins) runs its items live, and the job
    lists it under ``liveOnlyProviders``.

Where batch items go (:mod:`pipeline.worker.batch_lane`)
    A provider's worker hands every item it would queue for live calls
    (window reads, leases taken back, requeues) to its batch lane first;
    the lane keeps, per model, the items the deadline rule sends to
    batches, and every ``BATCH_SUBMIT_INTERVAL`` runs a round:
    :meth:`BatchSubmitter.submit` for what it collected, then
    :meth:`BatchSubmitter.advance`. Items a batch gives back (a line
    error to retry, a line that never ran, an item taken back for its
    deadline) pass the rule again: collected for a later round, once
    due, or handed to the worker's live calls.

Batch or live: the deadline rule (:mod:`pipeline.worker.batch_deadline`)
    Items store their job's mode and deadline. A ``batch`` item goes to
    batches unless its deadline is within ``BATCH_SAFETY_MARGIN``
    (default 2 h). An ``auto`` item goes to batches only while its
    deadline is at least the vendors' 24 h window plus that margin away
    (so even a batch that takes its whole window ends before the
    margin), and runs live otherwise. The margin is what running the
    rest live may take: when the deadline is that near, items still
    waiting for a round go live, and a provider batch holding items due
    is dealt with at its next poll (a batch that has ended is simply
    collected). If every item it holds is due, the batch is cancelled:
    the lines it answered are kept (batch price), the others come back
    as never run (their attempt given back) and run live. If it also
    holds items of other jobs that may wait, it runs on for them and the
    due items leave it at once (PENDING, attempt given back, run live);
    the vendor may still answer their lines, but those answers are not
    written, the items being no longer leased to the batch, so no item
    completes twice (the vendor's answer is paid and dropped). The
    record keeps the earliest deadline of the items it holds, so a
    round reads no items for batches that are not due. Every move goes
    through the journal: counts add up at every moment. A vendor slow
    to end a cancelled batch (OpenAI allows itself minutes) holds its
    items meanwhile: the margin must cover that.

The record of a provider batch (:class:`ProviderBatchRecord`)
    One document per provider batch in ``provider_batches``, written
    *before* anything reaches the provider: its model, its items' ids,
    a state and its owner. ``claimed`` → ``submitted`` (the vendor's
    reference stored) → ``collected``.

One owner per record
    A record carries the role of the worker that wrote it (its actor
    name without the code version: provider and replica index), and a
    worker's rounds move only records of its own role. One actor runs a
    role at a time (a deploy's old worker stops its rounds when it
    begins to drain, before its successor starts), so no two processes
    poll one batch; a restarted worker, or the next version's, takes the
    records back at its first round. Records of a role that no longer
    runs (replica ``k`` once ``WORKER_REPLICAS`` drops to ``k`` or
    below) are taken over at the next round by replica ``k mod
    replicas`` (:meth:`BatchLedger.adopt_orphans`): a removed replica's
    rounds stopped when it was retired, so they still have one mover.

Claiming
    The batch submitter of a provider's worker takes PENDING batch items
    of one model, up to the vendor's limits (``BatchClient.split``), and
    leases them to ``batch:<record id>`` for the whole batch window
    (24 h and a margin), so lease recovery leaves them alone while the
    provider holds them; the record is written first. The claim is the
    live one (``ItemStore.claim``, the attempt counted there); a line
    that comes back not having run gives its attempt back
    (:func:`decide_line`), so an expired or cancelled batch costs its
    unfinished items nothing.

Submitting without doubles
    ``claimed`` records are submitted, then marked ``submitted`` with
    the reference. After a crash in between, the record's id (sent as
    the batch's metadata or display name where the vendor keeps one)
    finds the batch if it was created; otherwise the items are submitted
    again. Anthropic keeps no batch metadata: there the record is only
    retried once the vendor's list shows no batch created in its window
    (its creation, less a margin, to an hour after) that holds its items:
    one of as many requests still running makes it wait; one that ended
    is the record's when its lines are the record's items.

Polling and results
    ``submitted`` records are polled every ``BATCH_SUBMIT_INTERVAL``. When
    a batch has ended its lines are read and mapped back by custom id
    (the item's ``_id``): :func:`decide_line` turns each into the item's
    outcome, written through the same journaled, lease-guarded
    ``ItemStore.finish`` as live results (counters, paging, JSON lines
    export, cancel and consume behave as for live jobs). A line error is
    retried like a live failure, within ``maxAttempts``, in the next
    batch (or live when the deadline is near); lines that never ran go
    back to PENDING, their attempt given back unless the whole batch
    failed (then each line is a transient error: it may fail again).
    Items of the batch the vendor says nothing about
    count as never run. Then the record is ``collected``.

Cancel and cost
    Cancelling every job of a provider batch cancels the batch (lines
    already answered are kept, as running live items are; the others go
    back to PENDING and on to CANCELED); a batch that ended before the
    cancel reached it is collected instead. A batch answer costs the
    model's batch price (:meth:`pipeline.catalog.Pricing.cost` with
    ``batch=True``) and its result says ``via: "batch"``; a live answer
    costs the live price, so a job that used both costs what it used.

Built so far: this module (the record, :func:`decide_line`),
:mod:`pipeline.worker.batch_ledger`,
:mod:`pipeline.worker.batch_submitter` (submit, resume, poll, collect,
cancel, take back for a deadline), :mod:`pipeline.worker.batch_lane`
(the worker leaving batch items to the submitter and running its
rounds; one owner per record), :mod:`pipeline.worker.batch_deadline`
(batch or live for ``batch`` and ``auto`` items); the result cache
(items of ``cache: true`` jobs at temperature 0 answered from it before
they are put in a provider batch, batch answers stored in it);
the job options (:mod:`pipeline.jobs.mode`), the HTTP API and the
offline batch CLI (``--mode``, ``--deadline``). A submission the
vendor refuses for good (a permanent error: a missing or wrong key, a
request it rejects) settles its items with that error, as a live call
would; a transient one leaves the record to the next round. A batch
that *failed* (none of its lines ran) spends each line's attempt, so
one that always fails ends its items FAILED after ``maxAttempts``;
lines of an expired or cancelled batch give theirs back. Fallbacks
apply to live calls only: a line that fails in a batch is retried on
its own model. ``benchmarks/batch_mode.py`` measures a batch job against
the same job live.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from bson import ObjectId

from pipeline.catalog import Pricing
from pipeline.jobs.shapes import DEFAULT_MAX_ATTEMPTS
from pipeline.states import Status
from pipeline.worker.item_store import Item, Outcome, answer_result
from pipeline.worker.retry import RetryPolicy, error_record
from providers.base import Completion
from providers.batch import LineError, ProviderBatchRef

#: The lease owner prefix of items held by a provider batch.
BATCH_LEASE_PREFIX = "batch:"
RecordState = Literal["claimed", "submitted", "collected"]
RECORD_STATES: tuple[RecordState, ...] = ("claimed", "submitted", "collected")


@dataclass
class ProviderBatchRecord:
    """A provider batch as stored in ``provider_batches``.

    Attributes:
        id: The record's id; items in the batch are leased to
            ``batch:<id>``.
        model: The catalog model's name.
        provider: The provider's registry name.
        item_ids: The items in the batch (their ``_id`` is the custom id).
        state: ``claimed``, ``submitted`` or ``collected``.
        created_at: When the record was written.
        ref: The vendor's reference, once submitted.
        submitted_at: When the vendor accepted the batch.
        collected_at: When its results were written.
        job_ids: The jobs its items belong to.
        cancel_requested: Whether the vendor was asked to cancel it (its
            jobs were all canceled).
        owner: The name of the worker that wrote it and alone moves it.
        deadline: The earliest deadline of the items it still holds (None:
            none has one); the worker takes items back as it nears.
    """

    id: ObjectId
    model: str
    provider: str
    item_ids: list[ObjectId]
    created_at: datetime
    state: RecordState = "claimed"
    ref: ProviderBatchRef | None = None
    submitted_at: datetime | None = None
    collected_at: datetime | None = None
    job_ids: list[ObjectId] = field(default_factory=list)
    cancel_requested: bool = False
    owner: str | None = None
    deadline: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lease_owner(self) -> str:
        """The lease owner of the record's items."""
        return f"{BATCH_LEASE_PREFIX}{self.id}"

    def to_doc(self) -> dict[str, Any]:
        """The stored document."""
        return {
            "_id": self.id,
            "model": self.model,
            "provider": self.provider,
            "itemIds": list(self.item_ids),
            "state": self.state,
            "createdAt": self.created_at,
            "ref": self.ref.to_doc() if self.ref is not None else None,
            "submittedAt": self.submitted_at,
            "collectedAt": self.collected_at,
            "jobIds": list(self.job_ids),
            "cancelRequested": self.cancel_requested,
            "owner": self.owner,
            "deadline": self.deadline,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ProviderBatchRecord:
        """Read a stored document.

        Raises:
            ValueError: The document's state is unknown.
        """
        state = doc["state"]
        if state not in RECORD_STATES:
            raise ValueError(f"unknown provider batch state {state!r}")
        ref = doc.get("ref")
        return cls(
            id=doc["_id"],
            model=doc["model"],
            provider=doc["provider"],
            item_ids=list(doc["itemIds"]),
            created_at=doc["createdAt"],
            state=state,
            ref=ProviderBatchRef.from_doc(ref) if ref else None,
            submitted_at=doc.get("submittedAt"),
            collected_at=doc.get("collectedAt"),
            job_ids=list(doc.get("jobIds") or ()),
            cancel_requested=bool(doc.get("cancelRequested")),
            owner=doc.get("owner"),
            deadline=doc.get("deadline"),
        )


def decide_line(
    item: Item,
    line: Completion | LineError | None,
    *,
    pricing: Pricing,
    record: ProviderBatchRecord,
    policy: RetryPolicy,
    rng: random.Random,
    now: datetime,
) -> Outcome:
    """Decide an item's outcome from its line of an ended provider batch.

    Args:
        item: The item (``attempts``, ``maxAttempts``).
        line: Its answer or line error; None when the vendor reported
            nothing for it (it never ran).
        pricing: The model's pricing (its batch price applies).
        record: The provider batch.
        policy: The retry policy of live calls.
        rng: Source of jitter.
        now: The current time.

    Returns:
        The outcome to write, with the item's attempts: the claim counted
        one, which a line that ran keeps and one that never ran gives
        back (written with the outcome, so a crash between two writes
        cannot give it back twice).
    """
    attempts = int(item.get("attempts", 1))
    max_attempts = int(item.get("maxAttempts", DEFAULT_MAX_ATTEMPTS))
    if line is None or (isinstance(line, LineError) and not line.ran):
        reason = (
            line.error.message
            if line is not None
            else "the provider batch ended before the line ran"
        )
        return Outcome(
            item=item,
            status=Status.PENDING,
            attempts=max(0, attempts - 1),
            error={
                "type": "batch_not_run",
                "message": reason,
                "retryable": True,
                "statusCode": None,
            },
            next_attempt_at=now,
        )
    if isinstance(line, LineError):
        decision = policy.decide(line.error, attempts, max_attempts, rng)
        record_ = error_record(line.error)
        if decision.retry:
            return Outcome(
                item=item,
                status=Status.PENDING,
                attempts=attempts,
                error=record_,
                next_attempt_at=now + timedelta(seconds=decision.delay_s),
            )
        return Outcome(
            item=item, status=Status.FAILED, attempts=attempts, error=record_
        )
    usage = line.usage
    cost = pricing.cost(usage.input_tokens, usage.output_tokens, batch=True)
    started = record.submitted_at or record.created_at
    latency_ms = (now - started).total_seconds() * 1000.0
    result = {
        **answer_result(line, cost, latency_ms),
        "via": "batch",
        "providerBatchId": record.ref.batch_id if record.ref else None,
    }
    return Outcome(
        item=item,
        status=Status.PROCESSED,
        attempts=attempts,
        result=result,
        cost=cost,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
    )
