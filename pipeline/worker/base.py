"""What the parts of a provider worker share.

:class:`~pipeline.worker.engine.ProviderWorker` is assembled from parts,
one concern per module (scheduling in ``engine``, chat completions in
``chat``, polling and recovery in ``polling``). :class:`WorkerBase`
declares the state they share, assigned in ``ProviderWorker.__init__``,
and the methods one part calls on another.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId

from pipeline.catalog import ModelCatalog
from pipeline.jobs.shapes import JobSummary
from pipeline.settings import Settings
from pipeline.worker.backlog import Backlog, Item, JobTrack
from pipeline.worker.handoffs import HandoffInbox
from pipeline.worker.item_store import ItemStore
from pipeline.worker.limits import ModelLimiter
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.retry import RetryPolicy
from pipeline.worker.served_model import ServedModel
from providers.base import Completion, CompletionRequest, LLMProvider

#: Exchanges a worker's reports for its shares (the limits coordinator).
SyncLimits = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class WorkerBase(ABC):
    """State and cross-part methods of a provider worker."""

    provider_name: str
    name: str
    incarnation: str
    holder: str
    settings: Settings
    models: dict[str, ServedModel]
    limiters: dict[str, ModelLimiter]
    backlog: Backlog
    waiting: dict[str, deque[Item]]
    held: dict[ObjectId, Item]
    taken_over: set[str]
    _full_lease_scan_due: bool
    metrics: WorkerMetrics
    _items: ItemStore
    handoffs: HandoffInbox
    _catalog: ModelCatalog
    _provider: LLMProvider
    _retry: RetryPolicy
    _rng: random.Random
    _chat_waiters: dict[str, int]
    _wake: asyncio.Event
    _polls_begun: int
    _polls_running: int
    _sync_limits: SyncLimits

    @abstractmethod
    async def start(self) -> None:
        """Connect, recover and start the loops (idempotent)."""

    @abstractmethod
    def _track(self, job: JobSummary) -> None:
        """Follow a job (new, canceled or requeued)."""

    @abstractmethod
    def _lease_seconds(self, model: str) -> float:
        """How long a claim of ``model``'s items leases them."""

    @abstractmethod
    def _is_canceled(self, job_id: ObjectId) -> bool:
        """Whether a tracked job was canceled (or deleted)."""

    @abstractmethod
    def _cancel_pending(self, track: JobTrack) -> None:
        """Sweep a canceled job's pending items to CANCELED."""

    @abstractmethod
    async def _cancel_items(self, items: list[Item]) -> None:
        """Cancel items of canceled jobs that went back to PENDING."""

    @abstractmethod
    async def _call(
        self, model: ServedModel, request: CompletionRequest
    ) -> Completion:
        """Call the provider once for ``model``."""

    @abstractmethod
    async def _refresh_models(self) -> None:
        """Reload this provider's models from the catalog."""

    @abstractmethod
    async def _sync_once(self) -> None:
        """Exchange reports and shares with the limits coordinator."""
