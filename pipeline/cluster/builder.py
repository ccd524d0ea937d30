"""The one place that makes Ray actors of the worker classes.

:class:`WorkerActor` and :class:`CoordinatorActor` are thin shells: each
reads its settings (secrets included) from its own process environment
and builds the plain class that does the work. Actors are named with
the code version they run (:mod:`pipeline.worker.names`), detached
(they outlive the API replica that created them) and restarted by Ray
when their process dies. A deploy of other code retires them
(:mod:`pipeline.cluster.rollout`) through ``begin_drain``/``drained``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ray
from bson import ObjectId

from pipeline.cluster.metrics import ray_metrics
from pipeline.code_version import code_version
from pipeline.logging import configure_logging
from pipeline.settings import Settings
from pipeline.worker.coordinator import LimitsCoordinator
from pipeline.worker.engine import ProviderWorker, open_worker
from pipeline.worker.names import coordinator_name, worker_name
from providers.base import Completion, CompletionRequest, StreamEvent

#: Concurrent method calls an actor serves (async: calls interleave).
ACTOR_CONCURRENCY = 1000
#: CPUs the limits coordinator declares: a few water-fills per second.
COORDINATOR_NUM_CPUS = 0.05


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

    def __init__(self, provider: str, replica: int, version: str) -> None:
        settings = Settings.from_env(generate_dev_secrets=False)
        # The version is the one in this actor's name, whatever the
        # environment it inherited says.
        self._settings = settings.with_overrides(code_version=version)
        configure_logging(settings.log_level)
        self._coordinator = coordinator_handle(self._settings)
        self._peers: dict[tuple[str, int], Any] = {}
        self._worker: ProviderWorker = open_worker(
            provider,
            replica,
            self._settings,
            self._sync_limits,
            metrics_exporters=ray_metrics(),
            signal_handoff=self._signal_handoff,
        )

    def _signal_handoff(self, provider: str, replica: int) -> None:
        """Tell another provider's worker it was handed items (a fallback).

        Fire and forget: its poll finds them if this is lost. Looked up,
        never created: the job's notification started it, and a retired
        worker must not start one of its own old version.
        """
        key = (provider, replica)
        try:
            if key not in self._peers:
                self._peers[key] = ray.get_actor(
                    worker_name(
                        provider, replica, code_version(self._settings)
                    ),
                    namespace=self._settings.ray_namespace,
                )
            self._peers[key].receive_handoffs.remote()
        except Exception:
            self._peers.pop(key, None)
            raise

    async def _sync_limits(
        self, holder: str, reports: dict[str, Any]
    ) -> dict[str, Any]:
        shares: dict[str, Any] = await self._coordinator.sync.remote(
            holder, reports
        )
        return shares

    async def ping(self) -> dict[str, Any]:
        """Start if needed; report who answered."""
        return await self._worker.ping()

    async def notify_job(self, job: dict[str, Any]) -> None:
        """A job arrived or changed."""
        await self._worker.notify_job(job)

    async def receive_handoffs(self) -> int:
        """Queue items another provider's worker handed over."""
        return await self._worker.receive_handoffs()

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

    async def begin_drain(self, successor_coordinator: str) -> None:
        """Stop claiming; report running calls to the successor's limits.

        Args:
            successor_coordinator: The name of the new version's limits
                coordinator (it exists: the successor created it).
        """
        self._coordinator = ray.get_actor(
            successor_coordinator, namespace=self._settings.ray_namespace
        )
        await self._worker.begin_drain(self._sync_limits)

    async def drained(self) -> list[str]:
        """Finish, give back, stop (:meth:`ProviderWorker.drained`).

        Returns:
            Ids of the items the successor must queue (``adopt``).
        """
        ids = await self._worker.drained()
        await self._coordinator.release.remote(self._worker.holder)
        return [str(i) for i in ids]

    async def take_over(self, names: list[str]) -> None:
        """See :meth:`ProviderWorker.take_over`."""
        self._worker.take_over(names)

    async def adopt(self, ids: list[str]) -> int:
        """Queue items a retired worker handed over."""
        return await self._worker.adopt([ObjectId(i) for i in ids])


def _options(settings: Settings, name: str, cpus: float) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": settings.ray_namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "num_cpus": cpus,
        "max_concurrency": ACTOR_CONCURRENCY,
    }


_RemoteCoordinator = ray.remote(CoordinatorActor)
_RemoteWorker = ray.remote(WorkerActor)


def coordinator_handle(settings: Settings) -> Any:
    """This code version's coordinator actor, created if it does not exist."""
    name = coordinator_name(code_version(settings))
    options = _options(settings, name, COORDINATOR_NUM_CPUS)
    return _RemoteCoordinator.options(**options).remote()


def worker_handle(settings: Settings, provider: str, replica: int) -> Any:
    """This code version's worker actor, created if it does not exist."""
    version = code_version(settings)
    options = _options(
        settings,
        worker_name(provider, replica, version),
        settings.worker_num_cpus,
    )
    return _RemoteWorker.options(**options).remote(provider, replica, version)
