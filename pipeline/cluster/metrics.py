"""The worker's metrics as Ray metrics (shown on the Ray dashboard)."""

from __future__ import annotations

from typing import Any

from pipeline.worker.metrics import EXPORTED_COUNTERS

LATENCY_BOUNDARIES_MS = [50.0, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]


def ray_metrics() -> dict[str, Any]:
    """Ray counters, histogram and gauges for a worker's metrics, by kind."""
    from ray.util import metrics

    tags = ("provider", "model")
    exported: dict[str, Any] = {
        kind: metrics.Counter(
            name, f"Worker {kind} count.", tag_keys=(*tags, label)
        )
        for kind, (name, label) in EXPORTED_COUNTERS.items()
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
