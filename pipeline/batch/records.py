"""The batch API's records: the options asked, the progress and results told.

Kept apart from the driver so callers (the CLI, scripts) read them
without the driver's machinery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pipeline.batch.state import Totals

#: Items per job by default: a request of a few MB, inserted by the
#: service in about a second, and a fair share of a model's queue.
DEFAULT_CHUNK_ITEMS = 10_000
#: Bytes of input lines per job by default (the service's default
#: request limit is 64 MiB; a job's items are held in memory there).
DEFAULT_CHUNK_BYTES = 8 * 2**20


@dataclass(frozen=True)
class BatchOptions:
    """How a new batch is run (a resumed batch keeps its own).

    Attributes:
        priority: Job priority (higher first, within the client).
        max_attempts: Attempts per item.
        cache: Reuse stored results of identical requests at
            temperature 0.
        mode: ``live``, ``batch`` or ``auto`` (:mod:`pipeline.jobs.mode`).
        deadline: How long each job may take, or None.
        fallbacks: Whether items may move to their model's catalog
            fallbacks while its provider is down.
        chunk_items: Items per job at most.
        chunk_bytes: Bytes of input lines per job at most.
        active_jobs: Jobs submitted ahead of the results written.
        poll_interval_s: Seconds between looks when nothing finished.
    """

    priority: int = 0
    max_attempts: int = 3
    cache: bool = False
    mode: str = "live"
    deadline: timedelta | None = None
    fallbacks: bool = True
    chunk_items: int = DEFAULT_CHUNK_ITEMS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    active_jobs: int = 4
    poll_interval_s: float = 1.0


@dataclass(frozen=True)
class Progress:
    """How far a batch got.

    ``phase`` is ``validating`` (``done``/``total`` in bytes read) or
    ``running`` (in results written).
    """

    phase: str
    done: int
    total: int
    totals: Totals
    jobs_submitted: int = 0
    jobs_total: int = 0


@dataclass(frozen=True)
class BatchResult:
    """A finished batch."""

    output: Path
    items: int
    totals: Totals
    job_ids: list[str]
    resumed: bool
    canceled: bool


@dataclass(frozen=True)
class CancelReport:
    """What ``--cancel`` did."""

    jobs_canceled: int
    items_unsubmitted: int


OnProgress = Callable[[Progress], None]
