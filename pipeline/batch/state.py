"""The state file beside the output: what was submitted and written.

``OUT.jsonl.state.json`` records the input's hash, the job options, the
chunks (each with its job id and results cursor), the output's
committed length and running totals. It is replaced atomically (write
a temporary file, fsync, rename, fsync the folder) after every change,
so it always describes a consistent moment: a crash loses at most the
lines written since the last commit, which the output then drops and
the next run writes again. ``OUT.jsonl.lock`` keeps two processes from
driving the same output at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipeline.batch.backend import ResultItem
from pipeline.batch.chunks import Chunk
from pipeline.batch.errors import BatchError
from pipeline.jobs.shapes import JobOptions
from pipeline.states import Status

STATE_VERSION = 1


def state_path(output: Path) -> Path:
    """Where the state of the batch writing ``output`` is kept."""
    return output.with_name(output.name + ".state.json")


def lock_path(output: Path) -> Path:
    """The lock file of the batch writing ``output``."""
    return output.with_name(output.name + ".lock")


@dataclass
class Totals:
    """What the written results add up to."""

    written: int = 0
    failed: int = 0
    canceled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def add(self, item: ResultItem) -> None:
        """Count one written result."""
        self.written += 1
        if item.status == Status.FAILED:
            self.failed += 1
        elif item.status == Status.CANCELED:
            self.canceled += 1
        self.input_tokens += item.input_tokens
        self.output_tokens += item.output_tokens
        self.cost += item.cost

    def to_doc(self) -> dict[str, Any]:
        """The totals as stored."""
        return {
            "written": self.written,
            "failed": self.failed,
            "canceled": self.canceled,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cost": self.cost,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Totals:
        """Read stored totals."""
        return cls(
            written=doc["written"],
            failed=doc["failed"],
            canceled=doc["canceled"],
            input_tokens=doc["inputTokens"],
            output_tokens=doc["outputTokens"],
            cost=doc["cost"],
        )


@dataclass
class BatchState:
    """One batch: its input, its jobs and how far the output is written.

    Attributes:
        input_sha256: The input's content hash (a resumed run checks it).
        input_bytes: The input's size.
        items: Items in the input.
        target: Where the jobs live (a URL, or ``local``).
        options: Options of every job (the idempotency key aside).
        chunks: The chunks, in input order.
        output_bytes: The output's committed length.
        totals: What the written results add up to.
        canceled: ``--cancel`` was asked: nothing more is submitted.
    """

    input_sha256: str
    input_bytes: int
    items: int
    target: str
    options: JobOptions
    chunks: list[Chunk]
    output_bytes: int = 0
    totals: Totals = field(default_factory=Totals)
    canceled: bool = False

    @property
    def complete(self) -> bool:
        """Whether every result is written and every job settled."""
        return all(
            chunk.done and (chunk.settled or chunk.job_id is None)
            for chunk in self.chunks
        )

    def to_doc(self) -> dict[str, Any]:
        """The state as stored."""
        return {
            "version": STATE_VERSION,
            "inputSha256": self.input_sha256,
            "inputBytes": self.input_bytes,
            "items": self.items,
            "target": self.target,
            "options": {
                "priority": self.options.priority,
                "maxAttempts": self.options.max_attempts,
                "cache": self.options.cache,
                "mode": self.options.mode,
                "deadlineSeconds": (
                    self.options.deadline.total_seconds()
                    if self.options.deadline is not None
                    else None
                ),
                "fallbacks": self.options.fallbacks,
            },
            "chunks": [chunk.to_doc() for chunk in self.chunks],
            "outputBytes": self.output_bytes,
            "totals": self.totals.to_doc(),
            "canceled": self.canceled,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> BatchState:
        """Read a stored state."""
        options = doc["options"]
        return cls(
            input_sha256=doc["inputSha256"],
            input_bytes=doc["inputBytes"],
            items=doc["items"],
            target=doc["target"],
            options=JobOptions(
                priority=options["priority"],
                max_attempts=options["maxAttempts"],
                cache=options["cache"],
                # States written before modes existed ran live.
                mode=options.get("mode", "live"),
                deadline=(
                    timedelta(seconds=options["deadlineSeconds"])
                    if options.get("deadlineSeconds") is not None
                    else None
                ),
                # States written before fallbacks existed allowed them.
                fallbacks=options.get("fallbacks", True),
            ),
            chunks=[Chunk.from_doc(chunk) for chunk in doc["chunks"]],
            output_bytes=doc["outputBytes"],
            totals=Totals.from_doc(doc["totals"]),
            canceled=doc["canceled"],
        )


def save_state(path: Path, state: BatchState) -> None:
    """Replace the state file atomically and durably."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as file:
        json.dump(state.to_doc(), file, separators=(",", ":"))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    # The rename itself is durable only once the folder is synced.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load_state(path: Path) -> BatchState | None:
    """The saved state, or None when there is none.

    Raises:
        BatchError: The file is not a batch state this version reads.
    """
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        raise BatchError(f"{path}: unreadable batch state: {error}") from None
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
        raise BatchError(f"{path}: not a batch state this version reads")
    try:
        return BatchState.from_doc(doc)
    except (KeyError, TypeError) as error:
        raise BatchError(f"{path}: damaged batch state ({error})") from None


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold the output's lock while a batch drives it.

    Raises:
        BatchError: Another process holds it.
    """
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchError(
                f"another metasync batch is writing {output}: stop it "
                "first (Ctrl-C)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
