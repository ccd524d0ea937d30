"""The cluster's optimizer: one detached actor that drives every run.

Runs are driven inside the cluster, never inside an HTTP request: the
API stores a run and tells this actor to start it. The actor also scans
for active runs that no live driver holds (created while it was down,
or whose driver died) and resumes them from their saved state. Ray
restarts the actor if its process dies; its next incarnation drives
under the same name and so takes its runs back at once. Its name
carries the code version: a deploy of other code retires it
(:mod:`pipeline.cluster.rollout`), and it hands its runs over by
freeing their leases (every step of a run is saved, every answer
stored), so the new version's optimizer adopts them at its next scan.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from bson import ObjectId

from optimizer.runner import RunDriver
from pipeline.cluster.handles import WorkerHandles
from pipeline.code_version import code_version
from pipeline.logging import configure_logging, get_logger
from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client
from pipeline.worker.names import optimizer_name

log = get_logger(__name__)

#: Seconds between scans for runs without a live driver.
SCAN_INTERVAL_S = 5.0
#: CPUs the optimizer declares: it orchestrates; the evaluations run in
#: Ray tasks (``num_cpus=0``) and the model calls in the workers.
OPTIMIZER_NUM_CPUS = 0.05


class RunsDriver:
    """Drives runs as asyncio tasks, and adopts orphaned ones.

    Args:
        driver: Drives one run at a time per call.
        orphans: Lists active runs that no live driver holds.
    """

    def __init__(self, driver: RunDriver, orphans: Any) -> None:
        self._driver = driver
        self._orphans = orphans
        self._retired = False
        self._running: dict[ObjectId, asyncio.Task[Any]] = {}
        self._scanner: asyncio.Task[None] | None = None

    def start(self, run_id: ObjectId) -> bool:
        """Drive a run unless this process already does.

        Returns:
            Whether a new driver task was started.
        """
        if self._retired:
            return False
        self._ensure_scanner()
        task = self._running.get(run_id)
        if task is not None and not task.done():
            return False
        self._running[run_id] = asyncio.create_task(self._driver.drive(run_id))
        return True

    def running(self) -> list[str]:
        """Ids of the runs driven here now."""
        return [str(k) for k, t in self._running.items() if not t.done()]

    def start_scanning(self) -> None:
        """Begin the periodic scan for orphaned runs (idempotent)."""
        self._ensure_scanner()

    async def retire(self) -> int:
        """Stop scanning and driving; free the runs' leases.

        Returns:
            How many runs were handed back.
        """
        self._retired = True
        tasks = [t for t in [self._scanner, *self._running.values()] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return await self._driver.release()

    def _ensure_scanner(self) -> None:
        if self._retired:
            return
        if self._scanner is None or self._scanner.done():
            self._scanner = asyncio.create_task(self._scan())

    async def _scan(self) -> None:
        while True:
            try:
                for run_id in await self._orphans():
                    if self.start(run_id):
                        log.info("run_adopted", run_id=str(run_id))
            except Exception as error:
                log.warning("run_scan_failed", error=str(error))
            await asyncio.sleep(SCAN_INTERVAL_S)


class OptimizerActor:
    """The Ray actor around :class:`RunsDriver` (settings from its env)."""

    def __init__(self, version: str) -> None:
        settings = Settings.from_env(
            generate_dev_secrets=False
        ).with_overrides(code_version=version)
        configure_logging(settings.log_level)
        assert settings.db_connection_string, "DB_CONNECTION_STRING unset"
        store = Store(
            create_mongo_client(
                settings.db_connection_string, app_name="metasync-optimizer"
            ),
            settings.db_name,
        )
        handles = WorkerHandles(settings)
        # One optimizer actor per code version: a restarted one drives
        # under the same name and takes its runs back at once.
        name = optimizer_name(code_version(settings))
        driver = RunDriver(store, name, handles.complete)
        self._runs = RunsDriver(driver, driver.orphans)

    async def start(self, run_id: str) -> bool:
        """Drive a run (see :meth:`RunsDriver.start`)."""
        return self._runs.start(ObjectId(run_id))

    async def ping(self) -> dict[str, Any]:
        """Start scanning if not yet; say which runs are driven here."""
        self._runs.start_scanning()
        return {"running": self._runs.running()}

    async def drained(self) -> int:
        """Retire: hand the runs back (see :meth:`RunsDriver.retire`)."""
        return await self._runs.retire()


_RemoteOptimizer = ray.remote(OptimizerActor)


def optimizer_handle(settings: Settings) -> Any:
    """This code version's optimizer actor, created if it does not exist."""
    version = code_version(settings)
    return _RemoteOptimizer.options(
        name=optimizer_name(version),
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        num_cpus=OPTIMIZER_NUM_CPUS,
        max_concurrency=1000,
    ).remote(version)


def optimizer_of(settings: Settings, version: str) -> Any:
    """The optimizer actor of ``version``.

    This code version's is created if need be; a newer deploy's is
    looked up, never created with this (older) code.

    Raises:
        ValueError: A newer version's optimizer does not exist (yet).
    """
    if version == code_version(settings):
        return optimizer_handle(settings)
    return ray.get_actor(
        optimizer_name(version), namespace=settings.ray_namespace
    )
