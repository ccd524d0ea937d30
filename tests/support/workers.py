"""The session cluster's worker actors, seen from the test driver."""

from __future__ import annotations

from typing import Any

import ray

from pipeline.code_version import installed_code_version
from pipeline.worker.names import worker_name


def worker_stats(provider: str, replica: int) -> dict[str, Any]:
    """A worker actor's counters (``ProviderWorker.stats``)."""
    handle = ray.get_actor(
        worker_name(provider, replica, installed_code_version()),
        namespace="metasync",
    )
    stats: dict[str, Any] = ray.get(handle.stats.remote(), timeout=30)
    return stats


def holds_nothing_of(model: str, provider: str, replicas: int) -> bool:
    """Whether no worker of ``provider`` runs or queues a call of ``model``.

    Every call starts from a worker's queue of claimed items: with both
    empty, and no item of the model left PENDING, no call can follow.
    """
    for replica in range(replicas):
        stats = worker_stats(provider, replica)
        if stats["inFlight"].get(model, 0) or stats["waiting"].get(model, 0):
            return False
    return True
