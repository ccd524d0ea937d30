"""Helpers for tests that run a provider worker as a plain class (no Ray).

The worker gets a local limits coordinator, the fake provider runs in a
thread, and the database is reached through a proxy that can cut every
connection (see the ``env`` fixture of ``tests/pipeline/worker``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError

from pipeline.catalog import ModelCatalog, ModelSpec, Pricing
from pipeline.clients import Quotas
from pipeline.code_version import installed_code_version
from pipeline.jobs.aggregation import FINAL_COUNTED, full_counts
from pipeline.jobs.service import JobService
from pipeline.jobs.shapes import JobOptions
from pipeline.jobs.submission import JobSubmitter
from pipeline.jobs.validation import ItemSpec
from pipeline.prompts import PromptService
from pipeline.settings import Settings
from pipeline.store import Store
from pipeline.worker.coordinator import LimitsCoordinator
from pipeline.worker.engine import ProviderWorker, open_worker
from pipeline.worker.limits_sync import SyncLimits
from pipeline.worker.names import worker_name
from pipeline.worker.process import cancel_all
from providers.fake import FakeProviderServer, fake_model_config

#: The name of :func:`make_worker`'s worker (the code's own version):
#: lanes and leases under it are an earlier life of that worker.
OPENAI_0 = worker_name("openai", 0, installed_code_version())


def local_sync(coordinator: LimitsCoordinator | None = None) -> SyncLimits:
    """A limits exchange with a coordinator in this process."""
    coordinator = coordinator or LimitsCoordinator()

    async def sync(holder: str, reports: dict[str, Any]) -> dict[str, Any]:
        return coordinator.sync(holder, reports)

    return sync


def make_worker(
    settings: Settings,
    store: Store,
    coordinator: LimitsCoordinator | None = None,
    replica: int = 0,
    **options: Any,
) -> ProviderWorker:
    """The openai worker (replica 0 unless told), in this process."""
    options.setdefault("seed", 1)
    return open_worker(
        "openai",
        replica,
        settings,
        local_sync(coordinator),
        store=store,
        **options,
    )


async def add_model(
    store: Store,
    fake: FakeProviderServer,
    model: str = "m1",
    latency_ms: int = 20,
    limits: dict[str, Any] | None = None,
    pricing: Pricing | None = None,
) -> None:
    """Put a model served by the fake provider in the catalog."""
    fake.configure({"models": {model: {"latencyMs": latency_ms}}})
    await ModelCatalog(store).seed(
        [
            ModelSpec(
                name=model,
                provider="openai",
                config=fake_model_config("openai", model, fake.url),
                limits=limits or {"maxConcurrency": 4},
                pricing=pricing or Pricing(),
            )
        ]
    )


async def submit(
    store: Store,
    settings: Settings,
    fake: FakeProviderServer,
    n: int,
    model: str = "m1",
    latency_ms: int = 20,
    *,
    max_attempts: int = 5,
    limits: dict[str, Any] | None = None,
    mode: str = "live",
    deadline: timedelta | None = None,
    pricing: Pricing | None = None,
    cache: bool = False,
    temperature: float | None = None,
    client_id: ObjectId | None = None,
) -> dict[str, Any]:
    """Submit a job of ``n`` inline items (``item 0``, ``item 1``...).

    Each job has a client of its own unless ``client_id`` is given.
    """
    await add_model(store, fake, model, latency_ms, limits, pricing)
    submitter = JobSubmitter(
        store, ModelCatalog(store), PromptService(store), settings
    )
    job, _ = await submitter.submit(
        client_id or ObjectId(),
        Quotas(),
        [
            ItemSpec(
                model=model, user_content=f"item {i}", temperature=temperature
            )
            for i in range(n)
        ],
        JobOptions(
            max_attempts=max_attempts,
            mode=mode,
            deadline=deadline,
            cache=cache,
        ),
    )
    return job


async def wait_done(
    store: Store, job_id: ObjectId, timeout_s: float = 60
) -> dict[str, Any]:
    """The job once it is no longer active (AssertionError at timeout).

    Tolerates a database that is coming back (a proxy just restored).
    """
    job: dict[str, Any] | None = None
    for _ in range(int(timeout_s * 10)):
        try:
            job = await store.raw("jobs").find_one({"_id": job_id})
        except PyMongoError:
            job = None
        if job is not None and not job["active"]:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job not done: {job}")


async def job_items(store: Store, job_id: ObjectId) -> list[dict[str, Any]]:
    """Every item of a job, in order."""
    return (
        await store.raw("items").find({"jobId": job_id}).sort("seq").to_list()
    )


class CountsReader:
    """Reads a job as a client does, over and over, noting what is wrong."""

    def __init__(self, store: Store, job_id: ObjectId) -> None:
        self._store = store
        self._service = JobService(store)
        self._job_id = job_id
        self.problems: list[str] = []
        self.reads = 0

    async def check(self) -> dict[str, int]:
        job = await self._store.raw("jobs").find_one({"_id": self._job_id})
        leased = await self._service.processing_counts([self._job_id])
        processing = leased[self._job_id]
        counts = full_counts(job, processing)
        total = job["totalItems"]
        final = sum(job["counts"].get(s, 0) for s in FINAL_COUNTED)
        self.reads += 1
        if sum(counts.values()) != total or final + processing > total:
            self.problems.append(
                f"counts {counts} (leased {processing}) for {total} items"
            )
        if job["status"] in ("PROCESSED", "FAILED") and processing:
            self.problems.append(
                f"{job['status']} with {processing} items still leased"
            )
        return counts

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.check()
            await asyncio.sleep(0.005)


async def kill_worker(worker: ProviderWorker) -> None:
    """End a worker as a SIGKILL would: nothing finishes, nothing flushes.

    Nothing new starts either (a cancelled call's cleanup would start
    the next one).
    """
    worker.tasks.spawn = lambda coroutine: coroutine.close()
    await cancel_all([*worker._loops, *worker.tasks.running])
    await worker.calls.provider.aclose()
