"""The API's side of the workers: notify them, ask them, check them.

Handles are looked up by name and cached; a handle whose actor died is
dropped and looked up (or recreated) again on the next call.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any

from pipeline.cluster.builder import worker_handle
from pipeline.logging import get_logger
from pipeline.settings import Settings
from providers.base import Completion, CompletionRequest, StreamEvent

log = get_logger(__name__)

PING_TIMEOUT_S = 5.0


class WorkerHandles:
    """Reach the worker actors of each provider."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._handles: dict[tuple[str, int], Any] = {}

    def _handle(self, provider: str, replica: int) -> Any:
        key = (provider, replica)
        if key not in self._handles:
            self._handles[key] = worker_handle(
                self._settings, provider, replica
            )
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
                    self._handle(provider, replica).notify_job.remote(job)
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
                self._handle(provider, replica).ping.remote(), PING_TIMEOUT_S
            )
            return answer
        except Exception:
            self.forget(provider, replica)
            raise

    async def stats(self, provider: str, replica: int) -> dict[str, Any]:
        """A worker's counters."""
        stats: dict[str, Any] = await self._handle(
            provider, replica
        ).stats.remote()
        return stats

    async def complete(
        self, provider: str, model: str, request: CompletionRequest
    ) -> Completion:
        """A chat completion through one of the provider's workers."""
        replica = random.randrange(self._settings.worker_replicas)
        try:
            completion: Completion = await self._handle(
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
        handle = self._handle(provider, replica)
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
