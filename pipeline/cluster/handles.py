"""The API's side of the workers: notify them, ask them, check them.

Handles are looked up by name and cached; a handle whose actor died is
dropped and looked up (or recreated) again on the next call. The names
are this code version's, until :meth:`WorkerHandles.follow` points the
handles at a newer version's actors (which are looked up, never created
with this process's older code).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any

import ray

from pipeline.cluster.builder import worker_handle
from pipeline.code_version import code_version
from pipeline.logging import get_logger
from pipeline.settings import Settings
from pipeline.store.deployed_version import DeployedVersion
from pipeline.worker.names import worker_name
from providers.base import Completion, CompletionRequest, StreamEvent

log = get_logger(__name__)

PING_TIMEOUT_S = 5.0


class WorkerHandles:
    """Reach the worker actors of each provider."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._own_version = code_version(settings)
        self._version = self._own_version
        self._handles: dict[tuple[str, int], Any] = {}

    async def follow_deployed(self, record: DeployedVersion) -> None:
        """Talk to the version the cluster runs, whatever this code's.

        For driver scripts, whose checkout may differ from the code the
        cluster was deployed with: they must not create actors.
        """
        current = await record.current()
        if current is not None and current != self._version:
            self.follow(current)

    def follow(self, version: str) -> None:
        """Talk to the workers of ``version`` (a newer deploy's) from now."""
        self._version = version
        self._handles.clear()

    def handle(self, provider: str, replica: int) -> Any:
        """A worker's actor handle (created when of this code version).

        Raises:
            ValueError: A newer version's worker does not exist (yet).
        """
        key = (provider, replica)
        if key not in self._handles:
            if self._version == self._own_version:
                found = worker_handle(self._settings, provider, replica)
            else:
                found = ray.get_actor(
                    worker_name(provider, replica, self._version),
                    namespace=self._settings.ray_namespace,
                )
            self._handles[key] = found
        return self._handles[key]

    def forget(self, provider: str, replica: int) -> None:
        """Drop a cached handle (its actor died)."""
        self._handles.pop((provider, replica), None)

    def replicas(self) -> range:
        """Replica indexes of every provider's worker."""
        return range(self._settings.worker_replicas)

    def notify_job(
        self, providers: Iterable[str], job: dict[str, Any]
    ) -> None:
        """Tell the workers of ``providers`` about a job (fire and forget).

        A lost notification only delays the work until the next poll.
        """
        for provider in providers:
            for replica in self.replicas():
                try:
                    self.handle(provider, replica).notify_job.remote(job)
                except Exception as error:
                    self.forget(provider, replica)
                    log.warning(
                        "notify_failed", provider=provider, error=str(error)
                    )

    async def ping(self, provider: str, replica: int) -> dict[str, Any]:
        """Start a worker if needed and wait for its answer.

        Raises:
            Exception: The actor is dead or did not answer in time.
        """
        try:
            answer: dict[str, Any] = await asyncio.wait_for(
                self.handle(provider, replica).ping.remote(), PING_TIMEOUT_S
            )
            return answer
        except Exception:
            self.forget(provider, replica)
            raise

    async def stats(self, provider: str, replica: int) -> dict[str, Any]:
        """A worker's counters."""
        stats: dict[str, Any] = await self.handle(
            provider, replica
        ).stats.remote()
        return stats

    async def complete(
        self, provider: str, model: str, request: CompletionRequest
    ) -> Completion:
        """A chat completion through one of the provider's workers."""
        replica = random.randrange(self._settings.worker_replicas)
        try:
            completion: Completion = await self.handle(
                provider, replica
            ).complete.remote(model, request)
            return completion
        except Exception:
            self.forget(provider, replica)
            raise

    async def stream(
        self, provider: str, model: str, request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        """A streamed chat completion through one of the workers."""
        replica = random.randrange(self._settings.worker_replicas)
        handle = self.handle(provider, replica)
        generator = handle.stream.options(num_returns="streaming").remote(
            model, request
        )
        try:
            async for ref in generator:
                event: StreamEvent = await ref
                yield event
        except Exception:
            self.forget(provider, replica)
            raise
