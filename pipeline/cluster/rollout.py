"""Deploys that upgrade: the current code version retires the others.

Actor names carry the code version (:mod:`pipeline.worker.names`), so a
deploy of new code creates new actors beside the old ones. Every
supervision round of a replica of the current version
(:class:`~pipeline.store.deployed_version.DeployedVersion`) finds the
project's actors of any other version in the namespace and retires them:

1. each old worker is told to drain (``begin_drain``): it stops claiming
   and reading, and from then on reports its running calls to the *new*
   limits coordinator, which created it first, so the new workers' grants
   leave room for them and the models' limits hold during the hand-over;
2. the new workers start (the supervisor creates them after this step);
3. each old worker finishes its running calls and writes their
   outcomes, gives back the items it had claimed but not sent (PENDING,
   their attempt given back) and returns the ids of every item it made
   PENDING since it began draining; the new worker of its provider
   queues them (``adopt``): nobody else would, as it may have read
   their window already;
4. the old actors are killed: workers, then their optimizer and
   limits coordinator; the new worker of each old worker's provider
   then takes back whatever the dead one still held (``take_over``:
   nothing after a clean drain).

A worker that does not finish draining within ``LEASE_SECONDS`` is
killed anyway, and one that runs code from before this hand-over is
stopped (running calls finish, outcomes are written) and killed: the
items it still held and its unsettled counter updates are taken back
by its successor at its next poll.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import ray

from pipeline.cluster.handles import WorkerHandles
from pipeline.code_version import code_version
from pipeline.logging import get_logger
from pipeline.settings import Settings
from pipeline.store.deployed_version import DeployedVersion
from pipeline.worker.names import COORDINATOR, ActorName, coordinator_name

log = get_logger(__name__)

#: Seconds an old worker has to start draining (it answers at once).
BEGIN_DRAIN_TIMEOUT_S = 10.0


class Rollout:
    """This replica's code version, and the retirement of the others.

    Args:
        settings: This process's settings.
        record: The stored current version.
        handles: This replica's worker handles (they follow the current
            version once this one is superseded).
    """

    def __init__(
        self,
        settings: Settings,
        record: DeployedVersion,
        handles: WorkerHandles,
    ) -> None:
        self._settings = settings
        self.version = code_version(settings)
        self._record = record
        self._handles = handles
        self._claimed = False
        #: The version that replaced this one (then it stands down).
        self.superseded_by: str | None = None
        self._retiring: dict[str, asyncio.Task[None]] = {}

    @property
    def serving_version(self) -> str:
        """The version whose actors this replica should talk to."""
        return self.superseded_by or self.version

    async def is_current(self) -> bool:
        """Claim the record once; then whether this version still holds it.

        Once superseded, always superseded: Serve never brings back the
        replicas of a version it is replacing.
        """
        if self.superseded_by is not None:
            return False
        if not self._claimed:
            await self._record.claim(self.version)
            self._claimed = True
            log.info("code_version_claimed", version=self.version)
        current = await self._record.current()
        if current is not None and current != self.version:
            self.superseded_by = current
            self._handles.follow(current)
            log.info(
                "code_version_superseded", version=self.version, by=current
            )
            return False
        return True

    def stale_actors(self) -> dict[str, list[ActorName]]:
        """The project's actors of other versions in the namespace."""
        stale: dict[str, list[ActorName]] = defaultdict(list)
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["namespace"] != self._settings.ray_namespace:
                continue
            name = ActorName.parse(entry["name"])
            if name is not None and name.version != self.version:
                stale[name.version].append(name)
        return stale

    async def retire_stale(self) -> None:
        """Begin retiring every other version's actors (not yet retiring).

        Returns once their workers have stopped claiming; the rest of
        the retirement runs in the background.
        """
        for version, actors in self.stale_actors().items():
            running = self._retiring.get(version)
            if running is not None and not running.done():
                continue
            log.info(
                "retiring_version",
                version=version,
                actors=sorted(a.name for a in actors),
            )
            draining = await self._begin(actors)
            self._retiring[version] = asyncio.create_task(
                self._finish(actors, draining)
            )

    async def wait_retired(self) -> None:
        """Wait for the retirements running now (tests, shutdown)."""
        tasks = [t for t in self._retiring.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks)

    async def _begin(self, actors: list[ActorName]) -> set[str]:
        """Tell the old workers to drain; return those that started."""
        successor = coordinator_name(self.version)
        workers = [a for a in actors if a.is_worker]
        answers = await asyncio.gather(
            *(self._call(a, "begin_drain", successor) for a in workers),
            return_exceptions=True,
        )
        draining = set()
        for actor, answer in zip(workers, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning(
                    "drain_not_started", actor=actor.name, error=repr(answer)
                )
            else:
                draining.add(actor.name)
        return draining

    async def _finish(
        self, actors: list[ActorName], draining: set[str]
    ) -> None:
        workers = [a for a in actors if a.name in draining]
        await asyncio.gather(*(self._finish_worker(a) for a in workers))
        # Workers that cannot drain (older code): at least let them
        # finish their calls and write what they have.
        others = [a for a in actors if a.is_worker and a not in workers]
        await asyncio.gather(*(self._stop_quietly(a) for a in others))
        # The optimizer hands its runs back; the coordinator goes last.
        for actor in actors:
            if not actor.is_worker and actor.role != COORDINATOR:
                await self._drain_quietly(actor)
        for actor in actors:
            self._kill(actor)
        await asyncio.gather(
            *(self._take_over(a) for a in actors if a.is_worker)
        )

    async def _finish_worker(self, actor: ActorName) -> None:
        try:
            ids: list[str] = await asyncio.wait_for(
                self._call(actor, "drained"), self._settings.lease_seconds
            )
        except Exception as error:
            log.warning("drain_failed", actor=actor.name, error=repr(error))
            return
        successor = self._successor(actor)
        if ids and successor is not None:
            try:
                adopted = await successor.adopt.remote(ids)
            except Exception as error:
                log.warning(
                    "handover_failed", actor=actor.name, error=repr(error)
                )
                return
            log.info(
                "worker_handed_over",
                actor=actor.name,
                items=len(ids),
                queued=adopted,
            )

    def _successor(self, actor: ActorName) -> Any:
        """The new worker of a retired worker's provider (or None)."""
        slot = actor.worker_slot()
        if slot is None:
            return None
        provider, replica = slot
        return self._handles.handle(
            provider, replica % self._settings.worker_replicas
        )

    async def _take_over(self, actor: ActorName) -> None:
        try:
            successor = self._successor(actor)
            if successor is not None:
                await successor.take_over.remote([actor.name])
        except Exception as error:
            log.warning(
                "take_over_failed", actor=actor.name, error=repr(error)
            )

    async def _stop_quietly(self, actor: ActorName) -> None:
        try:
            await asyncio.wait_for(
                self._call(actor, "stop"), self._settings.lease_seconds
            )
        except Exception as error:
            log.warning("stop_failed", actor=actor.name, error=repr(error))

    async def _drain_quietly(self, actor: ActorName) -> None:
        try:
            await asyncio.wait_for(
                self._call(actor, "drained"), self._settings.lease_seconds
            )
        except Exception as error:
            log.warning("drain_failed", actor=actor.name, error=repr(error))

    async def _call(self, actor: ActorName, method: str, *args: Any) -> Any:
        handle = ray.get_actor(
            actor.name, namespace=self._settings.ray_namespace
        )
        return await asyncio.wait_for(
            getattr(handle, method).remote(*args),
            BEGIN_DRAIN_TIMEOUT_S if method == "begin_drain" else None,
        )

    def _kill(self, actor: ActorName) -> None:
        try:
            handle = ray.get_actor(
                actor.name, namespace=self._settings.ray_namespace
            )
        except ValueError:
            return  # gone already (another replica retired it)
        ray.kill(handle, no_restart=True)
        log.info("actor_retired", actor=actor.name)
