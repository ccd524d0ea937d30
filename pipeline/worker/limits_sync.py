"""The worker's side of the model limits: reports out, shares in.

Several times a second the worker tells the limits coordinator, per
model, what it runs and what it could run (its demand), and enforces
the share it gets back (:class:`~pipeline.worker.limits.ModelLimiter`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.logging import get_logger
from pipeline.worker.limits import Share
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.served_model import ServedModels

log = get_logger(__name__)

#: Exchanges a worker's reports for its shares (the limits coordinator).
SyncLimits = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

SYNC_INTERVAL_S = 0.5
FAST_SYNC_INTERVAL_S = 0.1


class LimitsSync:
    """Exchanges reports and shares with the limits coordinator.

    Args:
        holder: The worker's name and incarnation (its key there).
        served: The worker's models and limiters.
        demand: Items a model could run now here (in flight, queued,
            waiting chat calls, unread windows).
        exchange: The coordinator's ``sync``; replaced when a retiring
            worker reports to its successor's coordinator.
        metrics: Exported at each sync.
        wake: Wakes the scheduler (a share changed).
    """

    def __init__(
        self,
        holder: str,
        served: ServedModels,
        demand: Callable[[str], int],
        exchange: SyncLimits,
        metrics: WorkerMetrics,
        wake: Callable[[], None],
    ) -> None:
        self._holder = holder
        self._served = served
        self._demand = demand
        self.exchange = exchange
        self._metrics = metrics
        self._wake = wake

    async def run(self) -> None:
        """Sync, calmly or fast (see :meth:`interval`); a loop."""
        while True:
            await asyncio.sleep(self.interval())
            self._metrics.export()
            try:
                await self.once()
            except Exception as error:
                # Keep the shares we have: they stay within the limits.
                log.warning("limits_sync_failed", error=str(error))

    async def once(self) -> None:
        """Report every served model; enforce the shares that come back."""
        limiters = self._served.limiters
        reports = {
            name: {
                "limits": model.limits,
                "demand": self._demand(name),
                "inFlight": limiters[name].in_flight,
                "enforced": limiters[name].share.concurrency,
            }
            for name, model in self._served.models.items()
        }
        if not reports:
            return
        shares = await self.exchange(self._holder, reports)
        for name, share in shares.items():
            if name in limiters:
                limiters[name].set_share(
                    Share(share["concurrency"], share["rpm"], share["tpm"])
                )
        self._wake()

    def interval(self) -> float:
        """Sync often while a share is changing hands, else calmly.

        A worker waiting for capacity, or one that must give some back,
        syncs every tenth of a second so the handover is quick.
        """
        for name in self._served.models:
            limiter = self._served.limiters[name]
            starved = limiter.share.concurrency == 0 and self._demand(name)
            if starved or limiter.in_flight > limiter.share.concurrency:
                return FAST_SYNC_INTERVAL_S
        return SYNC_INTERVAL_S
