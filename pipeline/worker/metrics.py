"""Worker metrics, exported through Ray's metrics API (the dashboard).

Items by status, provider latency, tokens, retries, queue depth and
event loop lag, per model. Counters are kept locally and pushed to Ray
in batches (:meth:`WorkerMetrics.export`, twice a second), so the hot
path pays a dictionary update, not a call into Ray, per item. Outside a
Ray worker nothing is exported; :meth:`WorkerMetrics.snapshot` reports
the local counters either way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

LATENCY_BOUNDARIES_MS = [50.0, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]

#: Local counter kinds and the Ray counter each is exported to.
_EXPORTED = {
    "items": ("metasync_items_total", "status"),
    "tokens": ("metasync_tokens_total", "direction"),
    "retries": ("metasync_retries_total", "error"),
}


class WorkerMetrics:
    """Counters and gauges of one worker."""

    def __init__(self, provider: str, *, export: bool) -> None:
        self.provider = provider
        self.counts: Counter[tuple[str, ...]] = Counter()
        self._unexported: Counter[tuple[str, ...]] = Counter()
        self._ray: dict[str, Any] = {}
        if export:
            self._ray = _ray_metrics()

    def _count(self, key: tuple[str, ...], amount: int = 1) -> None:
        self.counts[key] += amount
        if self._ray and key[0] in _EXPORTED:
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
        if self._ray:
            self._ray["latency"].observe(latency_ms, tags=self._tags(model))

    def retried(self, model: str, error_type: str) -> None:
        """Count an attempt that will be retried."""
        self._count(("retries", model, error_type))

    def timed(self, operation: str, seconds: float) -> None:
        """Record how long a database operation took."""
        self.counts[("ops", operation, "count")] += 1
        self.counts[("ops", operation, "ms")] += round(seconds * 1000)

    def gauges(self, model: str, queued: int, in_flight: int) -> None:
        """Set the queue depth and calls in flight of a model."""
        if self._ray:
            self._ray["queue"].set(queued, tags=self._tags(model))
            self._ray["in_flight"].set(in_flight, tags=self._tags(model))

    def loop_lag(self, milliseconds: float) -> None:
        """Set the event loop lag gauge."""
        if self._ray:
            self._ray["loop_lag"].set(
                milliseconds, tags={"provider": self.provider}
            )

    def export(self) -> None:
        """Push the counters counted since the last export to Ray."""
        pending, self._unexported = self._unexported, Counter()
        for (kind, model, label), amount in pending.items():
            _, tag = _EXPORTED[kind]
            self._ray[kind].inc(amount, tags=self._tags(model, **{tag: label}))

    def snapshot(self) -> dict[str, int]:
        """The local counters, keyed ``kind:model:label``."""
        return {":".join(key): value for key, value in self.counts.items()}

    def _tags(self, model: str, **extra: str) -> dict[str, str]:
        return {"provider": self.provider, "model": model, **extra}


def _ray_metrics() -> dict[str, Any]:
    from ray.util import metrics

    tags = ("provider", "model")
    exported: dict[str, Any] = {
        kind: metrics.Counter(
            name, f"Worker {kind} count.", tag_keys=(*tags, label)
        )
        for kind, (name, label) in _EXPORTED.items()
    }
    return {
        **exported,
        "latency": metrics.Histogram(
            "metasync_provider_latency_ms",
            "Provider call latency in milliseconds.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=tags,
        ),
        "queue": metrics.Gauge(
            "metasync_queue_depth",
            "Items known to a worker and not yet running.",
            tag_keys=tags,
        ),
        "in_flight": metrics.Gauge(
            "metasync_in_flight", "Provider calls running now.", tag_keys=tags
        ),
        "loop_lag": metrics.Gauge(
            "metasync_worker_loop_lag_ms",
            "How late the worker's event loop runs (moving average).",
            tag_keys=("provider",),
        ),
    }
