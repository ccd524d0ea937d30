"""The scheduler on its own: no database, no provider server, no Ray.

The scheduler is handed its parts, so these tests give it real claims,
preparation, calls and backlog over an item store kept in memory and a
provider that answers in-process, and watch what it starts.
"""

import asyncio
import random
from collections import deque

import pytest
from bson import ObjectId

from pipeline.catalog import Pricing
from pipeline.jobs.item_ids import new_item_base
from pipeline.settings import Settings
from pipeline.worker.backlog import Backlog, JobTrack
from pipeline.worker.calls import Calls
from pipeline.worker.claims import Claims
from pipeline.worker.job_tracker import JobTracker
from pipeline.worker.limits import ModelLimiter, Share
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.names import WorkerIdentity
from pipeline.worker.preparation import Preparation
from pipeline.worker.prompt_cache import PromptCache
from pipeline.worker.retry import RetryPolicy
from pipeline.worker.scheduler import Scheduler
from pipeline.worker.scheduling import DefaultScheduling
from pipeline.worker.served_model import ServedModel, ServedModels
from pipeline.worker.tasks import Tasks
from providers.base import Completion, LLMProvider, Usage

pytestmark = pytest.mark.anyio


class _MemoryItems:
    """The item store calls a claim makes, on items kept in memory."""

    def __init__(self):
        self.status = {}

    async def claim(self, items, owner, lease_s):
        claimed = []
        for item in items:
            if self.status.get(item["_id"], "PENDING") == "PENDING":
                self.status[item["_id"]] = "PROCESSING"
                claimed.append({**item, "leaseOwner": owner, "attempts": 1})
        return claimed

    async def mark_started(self, job_ids):
        pass

    async def cached_results(self, keys):
        return {}


class _Provider(LLMProvider):
    """Answers after a gate opens; counts calls and the most at once."""

    name = "memory"

    def __init__(self):
        self.calls = 0
        self.running = 0
        self.peak = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def validate_config(self, config):
        pass

    async def complete(self, config, request, api_key=None):
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
            await asyncio.sleep(0.001)
        finally:
            self.running -= 1
        return Completion("ok", "stop", Usage(1, 1), "m", 1.0)


class _Outcomes:
    """Stands in for the result writer: keeps what it is given."""

    def __init__(self):
        self.added = []

    def add(self, outcome):
        self.added.append(outcome)


def _scheduler(tmp_path, concurrency):
    settings = Settings.from_env({"METASYNC_HOME": str(tmp_path)})
    identity = WorkerIdentity.new("memory", 0, 1, "test")
    served = ServedModels("memory", None, settings)
    served.models = {
        "m": ServedModel(
            name="m",
            config={},
            max_concurrency=concurrency,
            rpm=None,
            tpm=None,
            pricing=Pricing(),
            api_key="k",
        )
    }
    served.limiters = {"m": ModelLimiter(Share(concurrency))}
    items = _MemoryItems()
    backlog = Backlog(DefaultScheduling())
    metrics = WorkerMetrics("memory")
    tasks = Tasks("memory")
    wake = asyncio.Event()
    provider = _Provider()
    outcomes = _Outcomes()
    chat_waiters = {}
    scheduler = Scheduler(
        settings,
        served,
        backlog,
        DefaultScheduling(),
        Claims(items, served, backlog, metrics, identity.holder, 60),
        Preparation(items, served, backlog.jobs, PromptCache()),
        Calls(provider, RetryPolicy(), random.Random(1), metrics),
        JobTracker(identity, items, served, backlog, tasks, metrics, wake.set),
        outcomes,
        tasks,
        metrics,
        chat_waiters=chat_waiters,
        wake=wake,
    )
    return scheduler, backlog, provider, outcomes, chat_waiters


def _queue(backlog, n):
    track = JobTrack(
        job_id=ObjectId(),
        client_id=ObjectId(),
        priority=0,
        total_items=n,
        item_base=new_item_base(),
        max_attempts=3,
        cache=False,
        windows=deque(),
    )
    backlog.add_job(track)
    items = [
        {"_id": ObjectId(), "jobId": track.job_id, "model": "m", "seq": i}
        | {"userContent": f"item {i}", "status": "PENDING"}
        for i in range(n)
    ]
    backlog.add_ready(track.job_id, items)
    return items


async def _until(predicate, timeout_s=10):
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (a counter)
            await asyncio.sleep(0.005)


async def test_every_item_is_called_once_within_the_share(tmp_path):
    scheduler, backlog, provider, outcomes, _ = _scheduler(tmp_path, 3)
    items = _queue(backlog, 40)
    loop = asyncio.create_task(scheduler.run())
    try:
        await _until(lambda: len(outcomes.added) == 40)
    finally:
        loop.cancel()
    assert provider.calls == 40
    assert provider.peak == 3
    answered = sorted(o.item["_id"] for o in outcomes.added)
    assert answered == sorted(i["_id"] for i in items)
    assert {o.status for o in outcomes.added} == {"PROCESSED"}


async def test_items_wait_while_a_chat_call_waits(tmp_path):
    scheduler, backlog, provider, outcomes, chat = _scheduler(tmp_path, 2)
    _queue(backlog, 6)
    chat["m"] = 1
    loop = asyncio.create_task(scheduler.run())
    try:
        # Claims go on (two rounds in hand) while no call starts.
        await _until(lambda: len(scheduler.waiting["m"]) == 4)
        assert provider.calls == 0
        chat["m"] = 0
        scheduler.wake()
        await _until(lambda: len(outcomes.added) == 6)
    finally:
        loop.cancel()
    assert provider.calls == 6


async def test_a_paused_scheduler_starts_nothing_and_gives_back(tmp_path):
    scheduler, backlog, provider, outcomes, _ = _scheduler(tmp_path, 1)
    _queue(backlog, 5)
    provider.gate.clear()  # the first call holds the only slot
    loop = asyncio.create_task(scheduler.run())
    try:
        await _until(lambda: provider.calls == 1 and scheduler.waiting["m"])
        scheduler.paused = True
        provider.gate.set()
        await _until(lambda: len(outcomes.added) == 1)
        unstarted = scheduler.take_unstarted()
    finally:
        loop.cancel()
    assert provider.calls == 1
    assert len(unstarted) == 1  # claimed two rounds of one; one sent
