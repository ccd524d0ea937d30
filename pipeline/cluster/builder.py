"""The one place that makes Ray actors of the worker classes.

:class:`WorkerActor` and :class:`CoordinatorActor` are thin shells: each
reads its settings (secrets included) from its own process environment
and builds the plain class that does the work. Actors are named,
detached (they outlive the API replica that created them) and restarted
by Ray when their process dies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ray

from pipeline.cluster.metrics import ray_metrics
from pipeline.logging import configure_logging
from pipeline.settings import Settings
from pipeline.worker.coordinator import LimitsCoordinator
from pipeline.worker.engine import ProviderWorker
from pipeline.worker.names import COORDINATOR_NAME, worker_name
from providers.base import Completion, CompletionRequest, StreamEvent

#: Concurrent method calls an actor serves (async: calls interleave).
ACTOR_CONCURRENCY = 1000


class CoordinatorActor:
    """The cluster's :class:`LimitsCoordinator`."""

    def __init__(self) -> None:
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._coordinator = LimitsCoordinator(restarted=restarted)

    async def sync(
        self, holder: str, reports: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """See :meth:`LimitsCoordinator.sync`."""
        return self._coordinator.sync(holder, reports)

    async def release(self, holder: str) -> None:
        """See :meth:`LimitsCoordinator.release`."""
        self._coordinator.release(holder)

    async def snapshot(self) -> dict[str, Any]:
        """See :meth:`LimitsCoordinator.snapshot`."""
        return self._coordinator.snapshot()


class WorkerActor:
    """One replica of a provider's worker."""

    def __init__(self, provider: str, replica: int) -> None:
        settings = Settings.from_env(generate_dev_secrets=False)
        configure_logging(settings.log_level)
        coordinator = coordinator_handle(settings)

        async def sync_limits(
            holder: str, reports: dict[str, Any]
        ) -> dict[str, Any]:
            shares: dict[str, Any] = await coordinator.sync.remote(
                holder, reports
            )
            return shares

        self._worker = ProviderWorker(
            provider,
            replica,
            settings,
            sync_limits,
            metrics_exporters=ray_metrics(),
        )

    async def ping(self) -> dict[str, Any]:
        """Start if needed; report who answered."""
        return await self._worker.ping()

    async def notify_job(self, job: dict[str, Any]) -> None:
        """A job arrived or changed."""
        await self._worker.notify_job(job)

    async def stats(self) -> dict[str, Any]:
        """Counters (round trips, in flight, queues)."""
        return self._worker.stats()

    async def complete(
        self, model: str, request: CompletionRequest
    ) -> Completion:
        """A chat completion under the model's limits."""
        return await self._worker.complete(model, request)

    async def stream(
        self, model: str, request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        """A streamed chat completion under the model's limits."""
        async for event in self._worker.stream(model, request):
            yield event

    async def stop(self) -> None:
        """Drain and stop (before a planned shutdown)."""
        await self._worker.stop()


def _options(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": settings.ray_namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "num_cpus": 0,
        "max_concurrency": ACTOR_CONCURRENCY,
    }


_RemoteCoordinator = ray.remote(CoordinatorActor)
_RemoteWorker = ray.remote(WorkerActor)


def coordinator_handle(settings: Settings) -> Any:
    """The coordinator actor, created if it does not exist."""
    options = _options(settings, COORDINATOR_NAME)
    return _RemoteCoordinator.options(**options).remote()


def worker_handle(settings: Settings, provider: str, replica: int) -> Any:
    """A worker actor, created if it does not exist."""
    options = _options(settings, worker_name(provider, replica))
    return _RemoteWorker.options(**options).remote(provider, replica)
