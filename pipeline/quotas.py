"""Per-client request rate quotas (a sliding one-minute window).

Each API replica keeps its own window, so with R replicas a client may
get up to R times its quota; pending-item and budget quotas are counters
on the client document, reserved atomically (:mod:`pipeline.usage`), and
hold across replicas.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from pipeline.errors import QuotaExceeded

WINDOW_S = 60.0


class RequestRateGate:
    """Admit at most ``limit`` requests per client per minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def admit(self, client_id: str, limit: int | None) -> None:
        """Count one request, or refuse it.

        Raises:
            QuotaExceeded: Over the limit; ``retry_after`` says when the
                oldest request in the window expires.
        """
        if limit is None:
            return
        now = self._clock()
        window = self._seen.setdefault(client_id, deque())
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            retry_after = max(0.0, window[0] + WINDOW_S - now)
            raise QuotaExceeded(
                f"over the quota of {limit} requests per minute",
                retry_after=round(retry_after, 3),
            )
        window.append(now)
