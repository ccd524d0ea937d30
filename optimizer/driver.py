"""The Python driver API: optimize a prompt from a script or the CLI.

::

    from optimizer import optimize

    run = optimize(
        prompts=["You are a calculator."],
        examples=[{"inputs": {"input": "What is 2 + 2?"}, "expected": "4"}],
        config={"targetModel": "demo-task", "metaModel": "demo-meta"},
        scorer=lambda example, output: output.strip() == example.expected,
    )
    print(run["result"]["message"])

The run is stored like any other (``GET /runs/{id}`` shows it when it
belongs to a client), its evaluations run as Ray tasks through the
cluster's provider workers, and this process drives the loop: a Python
scorer is allowed here. Interrupted, the same call with ``resume=<run
id>`` continues without repeating a completed model call.

It joins the cluster named by ``RAY_ADDRESS``, else the one ``metasync
up`` runs on this machine, and uses ``DB_CONNECTION_STRING``, else the
database ``metasync up`` started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bson import ObjectId

from optimizer.config import RunConfig
from optimizer.runner import RunDriver
from optimizer.runs import FINISHED, RunStore
from optimizer.service import RunService
from pipeline.catalog import ModelCatalog
from pipeline.cluster.handles import WorkerHandles
from pipeline.connect import join_ray, local_settings
from pipeline.prompts import PromptService
from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client
from pipeline.store.deployed_version import DeployedVersion

#: Seconds between progress reports.
PROGRESS_INTERVAL_S = 1.0

Progress = Callable[[dict[str, Any]], None]


async def drive_run(
    settings: Settings,
    *,
    prompts: Sequence[str] = (),
    examples: Sequence[Mapping[str, Any]] = (),
    config: RunConfig | Mapping[str, Any] | None = None,
    scorer: Callable[..., Any] | None = None,
    name: str | None = None,
    client_id: str | None = None,
    resume: str | None = None,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Create (or resume) a run and drive it here to its end.

    Args:
        settings: This process's settings (with a database).
        prompts: Starting prompts (texts).
        examples: The dataset (``{id?, inputs, expected?, rubric?}``).
        config: The run's configuration (``RunConfig`` or its JSON).
        scorer: A Python scorer callable (``scorer.kind`` becomes
            ``python`` when given and no kind was set).
        name: The run's name.
        client_id: The client who owns the run (None: the driver's).
        resume: Id of a run to resume instead of creating one.
        on_progress: Called with the run's progress about once a second.

    Returns:
        The finished run document.

    Raises:
        ValidationFailed: A bad configuration (naming the field).
    """
    assert settings.db_connection_string
    store = Store(
        create_mongo_client(
            settings.db_connection_string, app_name="metasync-driver"
        ),
        settings.db_name,
    )
    try:
        await store.ensure_indexes()
        runs = RunStore(store)
        owner = ObjectId(client_id) if client_id else None
        if resume is None:
            run_id = await _create(
                store, owner, prompts, examples, config, scorer, name
            )
        else:
            run_id = (await runs.get_run(owner, resume))["_id"]
        handles = WorkerHandles(settings)
        await handles.follow_deployed(DeployedVersion(store))
        driver = RunDriver(
            store,
            f"driver:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            handles.complete,
            python_scorer=scorer,
        )
        reporter = asyncio.create_task(_report(runs, run_id, on_progress))
        try:
            while (await runs.get_run(None, run_id))["status"] not in FINISHED:
                if await driver.drive(run_id) is None:
                    # Another driver holds it: wait for its lease to lapse
                    # (it died) or for it to finish the run.
                    await asyncio.sleep(PROGRESS_INTERVAL_S)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        run = await runs.get_run(None, run_id)
        if on_progress is not None and run.get("progress"):
            on_progress({**run["progress"], "status": run["status"]})
        return run
    finally:
        await store.close()


async def _create(
    store: Store,
    owner: ObjectId | None,
    prompts: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    config: RunConfig | Mapping[str, Any] | None,
    scorer: Callable[..., Any] | None,
    name: str | None,
) -> ObjectId:
    if not isinstance(config, RunConfig):
        fields = dict(config or {})
        if scorer is not None and "scorer" not in fields:
            fields["scorer"] = {"kind": "python"}
        config = RunConfig.model_validate(fields)
    service = RunService(
        store, ModelCatalog(store), PromptService(store), lambda _: None
    )
    run = await service.create(
        owner,
        name=name,
        config=config,
        working_prompts=[{"text": p} for p in prompts],
        dataset_id=None,
        examples=[dict(e) for e in examples],
        python_scorer=scorer is not None,
    )
    run_id: ObjectId = run["_id"]
    return run_id


async def _report(
    runs: RunStore, run_id: ObjectId, on_progress: Progress | None
) -> None:
    if on_progress is None:
        return
    while True:
        run = await runs.get_run(None, run_id)
        if run.get("progress"):
            on_progress({**run["progress"], "status": run["status"]})
        await asyncio.sleep(PROGRESS_INTERVAL_S)


def optimize(**options: Any) -> dict[str, Any]:
    """Run :func:`drive_run` on the local service or ``RAY_ADDRESS``.

    Takes the keyword arguments of :func:`drive_run` (without
    ``settings``) and returns the finished run document.
    """
    settings = local_settings()
    join_ray(settings)
    return asyncio.run(drive_run(settings, **options))
