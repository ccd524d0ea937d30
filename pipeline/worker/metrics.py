"""Worker metrics, kept locally and exported through given exporters.

Items by status, provider latency, tokens, retries, queue depth and
event loop lag, per model. Counters are kept locally and pushed to the
exporters in batches (:meth:`WorkerMetrics.export`, twice a second), so
the hot path pays a dictionary update, not an exporter call, per item.
A worker actor is given Ray's metrics
(:func:`pipeline.cluster.metrics.ray_metrics`, the dashboard); without
exporters nothing is exported, and :meth:`WorkerMetrics.snapshot`
reports the local counters either way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

#: Local counter kinds, and the name and label of the exported counter
#: each goes to.
EXPORTED_COUNTERS = {
    "items": ("metasync_items_total", "status"),
    "tokens": ("metasync_tokens_total", "direction"),
    "retries": ("metasync_retries_total", "error"),
}


class WorkerMetrics:
    """Counters and gauges of one worker."""

    def __init__(
        self, provider: str, exporters: Mapping[str, Any] | None = None
    ) -> None:
        """Count for one provider's worker.

        Args:
            provider: The provider (a tag of everything exported).
            exporters: Counters, histogram and gauges to export to, by
                kind (see :func:`pipeline.cluster.metrics.ray_metrics`);
                none by default.
        """
        self.provider = provider
        self.counts: Counter[tuple[str, ...]] = Counter()
        self._unexported: Counter[tuple[str, ...]] = Counter()
        self._exporters: Mapping[str, Any] = exporters or {}

    def _count(self, key: tuple[str, ...], amount: int = 1) -> None:
        self.counts[key] += amount
        if self._exporters and key[0] in EXPORTED_COUNTERS:
            self._unexported[key] += amount

    def item_finished(self, model: str, status: str) -> None:
        """Count an item's outcome."""
        self._count(("items", model, status))

    def call_finished(
        self,
        model: str,
        latency_ms: float,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        """Record a successful provider call."""
        self._count(("tokens", model, "input"), input_tokens)
        self._count(("tokens", model, "output"), output_tokens)
        if self._exporters:
            self._exporters["latency"].observe(
                latency_ms, tags=self._tags(model)
            )

    def retried(self, model: str, error_type: str) -> None:
        """Count an attempt that will be retried."""
        self._count(("retries", model, error_type))

    def timed(self, operation: str, seconds: float) -> None:
        """Record how long a database operation took."""
        self.counts[("ops", operation, "count")] += 1
        self.counts[("ops", operation, "ms")] += round(seconds * 1000)

    def gauges(self, model: str, queued: int, in_flight: int) -> None:
        """Set the queue depth and calls in flight of a model."""
        if self._exporters:
            self._exporters["queue"].set(queued, tags=self._tags(model))
            self._exporters["in_flight"].set(in_flight, tags=self._tags(model))

    def loop_lag(self, milliseconds: float) -> None:
        """Set the event loop lag gauge."""
        if self._exporters:
            self._exporters["loop_lag"].set(
                milliseconds, tags={"provider": self.provider}
            )

    def export(self) -> None:
        """Push the counters counted since the last export."""
        pending, self._unexported = self._unexported, Counter()
        for (kind, model, label), amount in pending.items():
            _, tag = EXPORTED_COUNTERS[kind]
            self._exporters[kind].inc(
                amount, tags=self._tags(model, **{tag: label})
            )

    def snapshot(self) -> dict[str, int]:
        """The local counters, keyed ``kind:model:label``."""
        return {":".join(key): value for key, value in self.counts.items()}

    def _tags(self, model: str, **extra: str) -> dict[str, str]:
        return {"provider": self.provider, "model": model, **extra}
