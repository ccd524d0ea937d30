"""The vendor-neutral core of the fake provider batches.

A :class:`FakeBatch` holds parsed lines, the behaviour of each line's
model as it was at submission, and a clock: it is validating for the
first tenth of its duration, in progress until the end, then ended with
an outcome (completed, expired, failed or cancelled). Each line's result
is decided once, when the batch ends, from the same simulated answer the
live endpoints give (:func:`~providers.fake.wire.compose_answer`), or an
error the batch behaviour injects. A :class:`BatchStore` keeps the
batches, the uploaded files and the counters of batch calls (files,
creates, polls, cancels, result downloads) per vendor, which benchmarks
read from ``GET /_fake/stats``. The vendor modules render all of it in
their own wire formats.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .batch_behaviour import BatchBehaviour, unit_hash
from .behaviour import Behaviour
from .wire import Answer, ChatCall, compose_answer

VALIDATING_SHARE = 0.1
Phase = Literal["validating", "in_progress", "ended"]
Outcome = Literal["completed", "expired", "failed", "cancelled"]
LineKind = Literal["succeeded", "errored", "expired", "cancelled"]


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of a batch.

    Attributes:
        custom_id: The caller's id for it.
        call: The parsed request, or None when it is malformed.
        invalid: Why it is malformed ("" when it is not).
    """

    custom_id: str
    call: ChatCall | None
    invalid: str = ""


@dataclass(frozen=True, slots=True)
class LineResult:
    """What became of one line once its batch ended.

    Attributes:
        custom_id: The line's id.
        kind: ``succeeded``, ``errored`` (failed on its own), ``expired``
            or ``cancelled`` (never ran).
        call: The parsed request, when it was valid.
        answer: The answer, when it succeeded.
        status: The HTTP status of the error, when it errored.
        message: The error's message.
    """

    custom_id: str
    kind: LineKind
    call: ChatCall | None = None
    answer: Answer | None = None
    status: int = 0
    message: str = ""


_LINE_ERROR_MESSAGES = {
    400: "Invalid request (simulated).",
    429: "Rate limit reached while running the batch (simulated).",
    500: "The server had an error processing this request (simulated).",
    503: "The model is overloaded (simulated).",
}


@dataclass
class FakeBatch:
    """A provider batch: its lines, its clock, its outcome.

    Attributes:
        id: The vendor-style id.
        vendor: The store key of the vendor (``openai``, ``anthropic``...).
        model: The batch's model (the first line's).
        lines: The lines, in submission order.
        behaviours: Each line model's behaviour at submission.
        seed: The configuration's seed (line faults hash it).
        created: Epoch seconds at creation.
        extra: What the vendor module keeps with it (file ids...).
        failure: Why validation rejects the whole batch ("" if it does
            not); such a batch fails when validation ends.
    """

    id: str
    vendor: str
    model: str
    lines: list[BatchLine]
    behaviours: dict[str, Behaviour]
    seed: int
    created: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)
    failure: str = ""
    cancelled_at: float | None = None
    _results: list[LineResult] | None = None
    _next_number: Any = None

    @property
    def behaviour(self) -> BatchBehaviour:
        """The batch behaviour of the batch's model."""
        return self.behaviours[self.model].batch

    @property
    def duration(self) -> float:
        """Seconds from creation to the end."""
        return self.behaviour.duration_ms / 1000.0

    @property
    def in_progress_at(self) -> float:
        """Epoch seconds at which validation ends."""
        return self.created + VALIDATING_SHARE * self.duration

    @property
    def fails(self) -> bool:
        """Whether the batch fails (rejected, or its behaviour says so)."""
        return bool(self.failure) or self.behaviour.outcome == "failed"

    @property
    def due(self) -> float:
        """Epoch seconds at which the batch ends by itself."""
        if self.fails:
            return self.in_progress_at
        return self.created + self.duration

    def ended_at(self, now: float) -> float | None:
        """When the batch ended, or None while it runs."""
        end = self.due
        if self.cancelled_at is not None:
            end = min(end, self.cancelled_at)
        return end if now >= end else None

    def phase(self, now: float) -> Phase:
        """Where the batch is at ``now`` (epoch seconds)."""
        if self.ended_at(now) is not None:
            return "ended"
        return "validating" if now < self.in_progress_at else "in_progress"

    def outcome(self, now: float) -> Outcome | None:
        """How the batch ended, or None while it runs."""
        ended = self.ended_at(now)
        if ended is None:
            return None
        if self.cancelled_at is not None and self.cancelled_at <= self.due:
            return "cancelled"
        if self.fails:
            return "failed"
        outcome: Outcome = self.behaviour.outcome  # type: ignore[assignment]
        return outcome

    def cancel(self, now: float) -> None:
        """Ask the batch to stop (no effect once it ended)."""
        if self.cancelled_at is None and self.ended_at(now) is None:
            self.cancelled_at = now

    def _done_by(self, custom_id: str, when: float) -> bool:
        """Whether a line had run by ``when``.

        Lines run in the order of a hash of their ids, evenly over the
        time in progress; an expiring batch gets through only its
        ``finishedFraction`` of them.
        """
        final = 1.0
        if self.behaviour.outcome == "expired":
            final = self.behaviour.finished_fraction
        span = self.due - self.in_progress_at
        if when < self.in_progress_at:
            return False
        share = (
            final
            if span <= 0
            else final * min(1.0, (when - self.in_progress_at) / span)
        )
        return unit_hash(self.seed, "order", custom_id) < share

    def finished_count(self, now: float) -> int:
        """Lines that have run by ``now`` (progress while in progress)."""
        if self.phase(now) == "ended":
            return sum(
                r.kind in ("succeeded", "errored") for r in self.results(now)
            )
        if self.phase(now) == "validating":
            return 0
        return sum(self._done_by(line.custom_id, now) for line in self.lines)

    def results(self, now: float) -> list[LineResult]:
        """Every line's result, in submission order (once ended).

        Args:
            now: Epoch seconds.

        Returns:
            The results; empty while the batch runs.
        """
        outcome = self.outcome(now)
        if outcome is None:
            return []
        if self._results is None:
            self._results = [
                self._result(line, outcome) for line in self.lines
            ]
        return self._results

    def _result(self, line: BatchLine, outcome: Outcome) -> LineResult:
        cid = line.custom_id
        if outcome == "failed":
            return LineResult(cid, "expired", line.call)
        ended = self.due
        if outcome == "cancelled":
            assert self.cancelled_at is not None
            ended = self.cancelled_at
        if not self._done_by(cid, ended):
            kind: LineKind = (
                "cancelled" if outcome == "cancelled" else "expired"
            )
            return LineResult(cid, kind, line.call)
        if line.call is None:
            return LineResult(cid, "errored", None, None, 400, line.invalid)
        behaviour = self.behaviours[line.call.model]
        errors = behaviour.batch.line_errors
        if errors.hits(self.seed, cid):
            message = _LINE_ERROR_MESSAGES[errors.status]
            return LineResult(
                cid, "errored", line.call, None, errors.status, message
            )
        answer = compose_answer(behaviour, line.call, self._number(), None)
        return LineResult(cid, "succeeded", line.call, answer)

    def _number(self) -> int:
        if self._next_number is None:
            self._next_number = itertools.count(1)
        number: int = next(self._next_number)
        return number


@dataclass
class StoredFile:
    """An uploaded (or generated) file."""

    id: str
    purpose: str
    filename: str
    data: bytes
    created: float = field(default_factory=time.time)


def iso_stamp(epoch: float | None) -> str | None:
    """An epoch time as the vendors write it (ISO 8601, ``Z``)."""
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    )


class BatchStore:
    """Every batch and file of one fake server, and the call counters."""

    def __init__(self) -> None:
        self.batches: dict[str, FakeBatch] = {}
        self.files: dict[str, StoredFile] = {}
        self.counters: dict[str, Counter[str]] = {}
        self._ids = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        """A fresh id such as ``batch_fake_7``."""
        return f"{prefix}{next(self._ids)}"

    def count(self, vendor: str, what: str, amount: int = 1) -> None:
        """Add to a vendor's counter (``creates``, ``polls``...)."""
        self.counters.setdefault(vendor, Counter())[what] += amount

    def add(self, batch: FakeBatch) -> FakeBatch:
        """Keep a new batch and count its creation and lines."""
        self.batches[batch.id] = batch
        self.count(batch.vendor, "creates")
        self.count(batch.vendor, "lines", len(batch.lines))
        return batch

    def get(self, vendor: str, batch_id: str) -> FakeBatch | None:
        """A vendor's batch by id, or None."""
        batch = self.batches.get(batch_id)
        return batch if batch is not None and batch.vendor == vendor else None

    def add_file(self, purpose: str, filename: str, data: bytes) -> StoredFile:
        """Keep a file and return it."""
        stored = StoredFile(self.new_id("file-fake-"), purpose, filename, data)
        self.files[stored.id] = stored
        return stored

    def reset(self) -> None:
        """Forget every batch, file and counter."""
        self.batches.clear()
        self.files.clear()
        self.counters.clear()

    def to_json(self) -> dict[str, dict[str, int]]:
        """The counters per vendor."""
        return {vendor: dict(c) for vendor, c in self.counters.items()}
