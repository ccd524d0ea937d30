"""Where this machine's Ray node exports metrics for Prometheus.

Ray's metrics agent serves every metric, the project's included, on each
node's metrics export port, each name prefixed ``ray_``
(``metasync_items_total`` is scraped as ``ray_metasync_items_total``).
Ray also keeps a Prometheus file-based service-discovery file listing
every node's export address in its session directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Ray's service-discovery file name (in the session directory, and
#: linked from Ray's temp directory for the latest session).
DISCOVERY_FILE = "prom_metrics_service_discovery.json"


@dataclass(frozen=True)
class MetricsExport:
    """This node's metrics endpoint and the cluster's discovery file."""

    port: int
    discovery_file: Path

    @property
    def url(self) -> str:
        """The endpoint Prometheus scrapes."""
        return f"http://127.0.0.1:{self.port}/metrics"


def local_metrics_export() -> MetricsExport:
    """The metrics export of the node this process is connected to.

    Raises:
        RuntimeError: Ray is not initialized in this process.
    """
    import ray

    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialized")
    node_id = ray.get_runtime_context().get_node_id()
    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    # The session directory has no public accessor.
    node_state: Any = ray._private.worker._global_node
    session = node_state.get_session_dir_path()
    return MetricsExport(
        port=int(node["MetricsExportPort"]),
        discovery_file=Path(session) / DISCOVERY_FILE,
    )
