"""``metasync up``: the whole service on this machine, in one command.

Starts, in order: the embedded database (unless ``DB_CONNECTION_STRING``
is set), the fake provider (for the simulated demo models), a local Ray
cluster with the offline settings, and the Serve app; then waits until
``/ready`` answers. :meth:`LocalStack.stop` undoes all of it.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from pipeline.cluster.runtime import init_local_ray
from pipeline.logging import get_logger
from pipeline.settings import SECRET_VARIABLES, Settings
from serve_app.local_services import FakeProviderProcess, LocalDatabase
from serve_app.ray_metrics import MetricsExport, local_metrics_export

log = get_logger(__name__)

#: The port the demo models in configs/models.yaml point at.
FAKE_PROVIDER_PORT = 8799
#: CPUs each worker actor declares on a local run (see ``start``).
LOCAL_WORKER_NUM_CPUS = 0.1


@dataclass
class StackOptions:
    """How to run the local stack."""

    host: str = "127.0.0.1"
    port: int = 8001
    fake_provider: bool = True
    dashboard: bool = True
    dashboard_port: int = 8265
    #: Where Ray exports Prometheus metrics; ``None``: a free port.
    metrics_port: int | None = None
    num_cpus: int | None = None
    ready_timeout_s: float = 120.0


class LocalStack:
    """The processes of a local run, started and stopped together."""

    def __init__(self, settings: Settings, options: StackOptions) -> None:
        self.settings = settings
        self.options = options
        self.database = LocalDatabase(settings.state_dir)
        self.fake = FakeProviderProcess(settings.state_dir, FAKE_PROVIDER_PORT)
        self._ray_started = False
        self.metrics: MetricsExport | None = None

    @property
    def url(self) -> str:
        """The app's base URL."""
        return f"http://{self.options.host}:{self.options.port}"

    def start(self) -> None:
        """Start everything and wait until the app is ready.

        Raises:
            RuntimeError: A part did not start (the message says which).
        """
        env = os.environ
        if not self.settings.db_connection_string:
            env["DB_CONNECTION_STRING"] = self.database.start()
        # Ray's processes inherit this environment: that is how each
        # replica and worker reads its secrets, never via arguments.
        for name in SECRET_VARIABLES:
            env[name] = getattr(self.settings, name.lower()).get_secret_value()
        env.setdefault("METASYNC_HOME", self.settings.state_dir)
        # One machine: nothing to spread over, and the service must fit
        # a small one (5 providers' workers at 0.1 CPU, the coordinator
        # and optimizer at 0.05: 0.6 CPU).
        env.setdefault("WORKER_NUM_CPUS", str(LOCAL_WORKER_NUM_CPUS))
        if self.options.fake_provider:
            self.fake.start()
        from ray import serve

        from serve_app.deployment import APP_NAME, build_app

        metrics: dict[str, Any] = {}
        if self.options.metrics_port:
            metrics["_metrics_export_port"] = self.options.metrics_port
        init_local_ray(
            self.settings.state_dir,
            num_cpus=self.options.num_cpus,
            include_dashboard=self.options.dashboard,
            dashboard_port=self.options.dashboard_port,
            namespace=self.settings.ray_namespace,
            log_to_driver=False,
            **metrics,
        )
        self._ray_started = True
        self.metrics = local_metrics_export()
        serve.start(
            http_options={"host": self.options.host, "port": self.options.port}
        )
        serve.run(build_app(), name=APP_NAME, route_prefix="/")
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"{self.url}/ready did not answer in time")

    def stop(self) -> None:
        """Stop what :meth:`start` started, in seconds.

        Serve's graceful shutdown is skipped: it waits for the controller,
        which waits up to 20 s for each replica's open requests (a chat
        call, a slow client) and gives up after 30 s. The whole local
        cluster goes with ``ray.shutdown`` anyway, and nothing is lost:
        jobs are in the database and the leases of unfinished items
        expire and are taken up at the next start. The helper processes
        stop while Ray does.
        """
        self.fake.terminate()
        self.database.terminate()
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False
        self.fake.stop()
        self.database.stop()
