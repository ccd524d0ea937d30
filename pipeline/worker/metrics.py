"""Worker metrics, exported through Ray's metrics API (the dashboard).

Items by status, provider latency, tokens, retries and queue depth, per
model. Outside a Ray worker the same calls only update local counters,
which :meth:`WorkerMetrics.snapshot` reports either way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

LATENCY_BOUNDARIES_MS = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]


class WorkerMetrics:
    """Counters and gauges of one worker."""

    def __init__(self, provider: str, *, export: bool) -> None:
        self.provider = provider
        self.counts: Counter[tuple[str, ...]] = Counter()
        self._ray: dict[str, Any] = {}
        if export:
            from ray.util import metrics

            tags = ("provider", "model")
            self._ray = {
                "items": metrics.Counter(
                    "metasync_items_total",
                    "Items finished by a worker, by outcome status.",
                    tag_keys=(*tags, "status"),
                ),
                "latency": metrics.Histogram(
                    "metasync_provider_latency_ms",
                    "Provider call latency in milliseconds.",
                    boundaries=LATENCY_BOUNDARIES_MS,
                    tag_keys=tags,
                ),
                "tokens": metrics.Counter(
                    "metasync_tokens_total",
                    "Tokens used, by direction (input/output).",
                    tag_keys=(*tags, "direction"),
                ),
                "retries": metrics.Counter(
                    "metasync_retries_total",
                    "Attempts that will be retried, by error type.",
                    tag_keys=(*tags, "error"),
                ),
                "queue": metrics.Gauge(
                    "metasync_queue_depth",
                    "Items known to a worker and not yet running.",
                    tag_keys=tags,
                ),
                "in_flight": metrics.Gauge(
                    "metasync_in_flight",
                    "Provider calls running now.",
                    tag_keys=tags,
                ),
            }

    def _tags(self, model: str, **extra: str) -> dict[str, str]:
        return {"provider": self.provider, "model": model, **extra}

    def item_finished(self, model: str, status: str) -> None:
        """Count an item's outcome."""
        self.counts[("items", model, status)] += 1
        if self._ray:
            self._ray["items"].inc(tags=self._tags(model, status=status))

    def call_finished(
        self, model: str, latency_ms: float, input_tokens: int, output_tokens: int
    ) -> None:
        """Record a successful provider call."""
        self.counts[("tokens", model, "input")] += input_tokens
        self.counts[("tokens", model, "output")] += output_tokens
        if self._ray:
            tags = self._tags(model)
            self._ray["latency"].observe(latency_ms, tags=tags)
            self._ray["tokens"].inc(
                input_tokens, tags=self._tags(model, direction="input")
            )
            self._ray["tokens"].inc(
                output_tokens, tags=self._tags(model, direction="output")
            )

    def retried(self, model: str, error_type: str) -> None:
        """Count an attempt that will be retried."""
        self.counts[("retries", model, error_type)] += 1
        if self._ray:
            self._ray["retries"].inc(tags=self._tags(model, error=error_type))

    def gauges(self, model: str, queued: int, in_flight: int) -> None:
        """Set the queue depth and calls in flight of a model."""
        if self._ray:
            self._ray["queue"].set(queued, tags=self._tags(model))
            self._ray["in_flight"].set(in_flight, tags=self._tags(model))

    def snapshot(self) -> dict[str, int]:
        """The local counters, keyed ``kind:model:label``."""
        return {":".join(key): value for key, value in self.counts.items()}
