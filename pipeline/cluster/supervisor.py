"""Keeps one worker per provider (times the replicas) alive.

Runs in each API replica: every few seconds it makes sure the limits
coordinator and a worker for every provider with active models exist
and answer, for this replica's code version. Creation is idempotent
(named actors, ``get_if_exists``), so several API replicas supervising
at once is harmless; Ray restarts an actor whose process dies, and the
supervisor recreates one that is gone. It first retires the actors of
other code versions (:mod:`pipeline.cluster.rollout`); a replica whose
version was superseded by a newer deploy creates nothing.
"""

from __future__ import annotations

import asyncio

from pipeline.catalog import ModelCatalog
from pipeline.cluster.builder import coordinator_handle
from pipeline.cluster.handles import WorkerHandles
from pipeline.cluster.rollout import Rollout
from pipeline.logging import get_logger
from pipeline.settings import Settings

log = get_logger(__name__)

SUPERVISE_INTERVAL_S = 5.0


class WorkerSupervisor:
    """Starts and watches the worker actors."""

    def __init__(
        self,
        settings: Settings,
        catalog: ModelCatalog,
        handles: WorkerHandles,
        rollout: Rollout,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._handles = handles
        self.rollout = rollout
        self.health: dict[str, str] | None = None

    async def providers(self) -> set[str]:
        """Providers with at least one active model."""
        return {
            m["provider"] for m in await self._catalog.list(active_only=True)
        }

    async def ensure(self) -> dict[str, str]:
        """Create what is missing and ping every worker.

        Returns:
            Per worker (``provider/replica``): ``ok`` or the problem;
            nothing once a newer deploy took over (its replicas check).
        """
        if not await self.rollout.is_current():
            self.health = {}
            return self.health
        # The successor's coordinator exists before old workers drain
        # (they report to it), and the new workers start after.
        coordinator_handle(self._settings)
        await self.rollout.retire_stale()
        health: dict[str, str] = {}
        for provider in sorted(await self.providers()):
            for replica in self._handles.replicas():
                key = f"{provider}/{replica}"
                try:
                    await self._handles.ping(provider, replica)
                    health[key] = "ok"
                except Exception as error:
                    health[key] = f"not answering: {type(error).__name__}"
                    log.warning(
                        "worker_unhealthy", worker=key, error=str(error)
                    )
        self.health = health
        return health

    async def run(self) -> None:
        """Supervise until cancelled."""
        while True:
            try:
                await self.ensure()
            except Exception as error:
                log.warning("supervision_failed", error=str(error))
            await asyncio.sleep(SUPERVISE_INTERVAL_S)

    async def readiness(self) -> str:
        """``ok`` when every expected worker answered the last check."""
        if self.health is None:
            return "workers not checked yet"
        bad = [k for k, v in self.health.items() if v != "ok"]
        return "ok" if not bad else "unhealthy: " + ", ".join(bad)
