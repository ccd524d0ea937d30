"""The app's collaborators, built once per replica from its settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId

from optimizer.actor import optimizer_of
from optimizer.service import RunService
from pipeline.catalog import (
    ModelCatalog,
    ModelSpec,
    key_variable_policy,
    load_seed,
)
from pipeline.clients import ClientService
from pipeline.cluster.handles import WorkerHandles
from pipeline.cluster.rollout import Rollout
from pipeline.cluster.supervisor import WorkerSupervisor
from pipeline.code_version import code_version
from pipeline.jobs.service import JobService
from pipeline.jobs.submission import JobSubmitter
from pipeline.logging import get_logger
from pipeline.prompts import PromptService
from pipeline.quotas import RequestRateGate
from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client
from pipeline.store.deployed_version import DeployedVersion

log = get_logger(__name__)

#: Seconds between sweeps for abandoned submissions.
JANITOR_INTERVAL_S = 60.0
#: Seconds between checks that the optimizer actor answers.
OPTIMIZER_SUPERVISE_INTERVAL_S = 5.0


@dataclass
class AppContext:
    """Everything a request handler may need."""

    settings: Settings
    store: Store
    clients: ClientService
    catalog: ModelCatalog
    prompts: PromptService
    submitter: JobSubmitter
    jobs: JobService
    workers: WorkerHandles
    rate_gate: RequestRateGate
    runs: RunService
    supervisor: WorkerSupervisor | None = None
    #: Named checks for ``/ready``, each answering "ok" or a problem.
    readiness_checks: dict[str, Callable[[], Awaitable[str]]] = field(
        default_factory=dict
    )
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings, *, supervise: bool) -> AppContext:
        """Connect, create indexes, seed the catalog, start background work.

        Args:
            settings: This process's settings.
            supervise: Start and watch the worker actors (needs Ray).

        Raises:
            DatabaseUnavailable: The database cannot be reached.
        """
        if not settings.db_connection_string:
            raise RuntimeError(
                "DB_CONNECTION_STRING is not set: start the service with "
                "`metasync up`, which provides a local database"
            )
        store = Store(
            create_mongo_client(
                settings.db_connection_string, app_name="metasync-api"
            ),
            settings.db_name,
        )
        await store.ensure_indexes(cache_ttl_s=settings.cache_ttl_seconds)
        catalog = ModelCatalog(store, key_variable_policy(settings))
        await catalog.seed(_seed_specs(settings.models_file))
        prompts = PromptService(store)
        workers = WorkerHandles(settings)
        rollout = Rollout(settings, DeployedVersion(store), workers)
        optimizer = OptimizerLink(settings, rollout, enabled=supervise)
        context = cls(
            settings=settings,
            store=store,
            clients=ClientService(
                store, settings.api_key_pepper.get_secret_value()
            ),
            catalog=catalog,
            prompts=prompts,
            submitter=JobSubmitter(store, catalog, prompts, settings),
            jobs=JobService(store),
            workers=workers,
            rate_gate=RequestRateGate(),
            runs=RunService(store, catalog, prompts, optimizer.start),
        )
        if supervise:
            supervisor = WorkerSupervisor(settings, catalog, workers, rollout)
            context.supervisor = supervisor
            context.readiness_checks["workers"] = supervisor.readiness
            context._tasks.append(asyncio.create_task(supervisor.run()))
            context._tasks.append(asyncio.create_task(optimizer.supervise()))
        context._tasks.append(asyncio.create_task(context._janitor()))
        return context

    async def _janitor(self) -> None:
        while True:
            try:
                await self.submitter.clean_abandoned()
            except Exception as error:
                log.warning("janitor_failed", error=str(error))
            await asyncio.sleep(JANITOR_INTERVAL_S)

    async def close(self) -> None:
        """Stop background work and release connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()


class OptimizerLink:
    """The app's link to the cluster's optimizer actor.

    Without Ray (``enabled`` off) runs are stored and wait: the
    optimizer adopts them when it starts. Once a newer deploy took over
    (``rollout``), runs go to the newer version's optimizer.
    """

    def __init__(
        self, settings: Settings, rollout: Rollout, *, enabled: bool
    ) -> None:
        self._settings = settings
        self._rollout = rollout
        self._enabled = enabled

    def _optimizer(self) -> Any:
        return optimizer_of(self._settings, self._rollout.serving_version)

    def start(self, run_id: ObjectId) -> None:
        """Ask the optimizer to drive a run (fire and forget).

        A lost message only delays the run until the optimizer's scan.
        """
        if not self._enabled:
            return
        try:
            self._optimizer().start.remote(str(run_id))
        except Exception as error:
            log.warning("optimizer_notify_failed", error=str(error))

    async def supervise(self) -> None:
        """Keep the optimizer actor alive and scanning, until cancelled."""
        while True:
            try:
                # The current version's replicas keep its optimizer.
                if self._rollout.serving_version == code_version(
                    self._settings
                ):
                    await self._optimizer().ping.remote()
            except Exception as error:
                log.warning("optimizer_unhealthy", error=str(error))
            await asyncio.sleep(OPTIMIZER_SUPERVISE_INTERVAL_S)


def _seed_specs(path: str) -> list[ModelSpec]:
    """The catalog seed, or nothing when the file is absent."""
    if not Path(path).exists():
        log.warning("catalog_seed_missing", path=path)
        return []
    return load_seed(path)
