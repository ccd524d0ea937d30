"""The two peers Metasync is measured against.

* :func:`run_asyncio`: a plain script, one ``AsyncOpenAI`` client and one
  ``asyncio.Semaphore(C)`` per model, every item started at once
  (``gather``), in this process. Timed from the first call to the last
  answer; its own CPU time is reported too.
* :func:`run_ray_data`: Ray Data LLM's HTTP request processor
  (``HttpRequestProcessorConfig``) over ``ray.data.from_items`` of the
  same prompts, on a local Ray cluster started for it. Timed from the
  start of execution until every row is back in the driver; answers are
  counted, not stored.

Both send exactly the body Metasync's ``openai`` adapter sends for an
item: the model and one user message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from benchmarks._fake import FakeServer
from benchmarks._workload import RunResult, Workload

BATCHES_AT_ONCE_ENV = "RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY"


async def _asyncio_run(
    fake: FakeServer, workload: Workload, timeout_s: float
) -> tuple[int, float]:
    from openai import AsyncOpenAI

    names = workload.model_names
    clients = {
        name: AsyncOpenAI(
            api_key="no-key-needed",
            base_url=f"{fake.url}/v1",
            max_retries=0,
        )
        for name in names
    }
    gates = {name: asyncio.Semaphore(workload.concurrency) for name in names}

    async def one(model: str, text: str) -> bool:
        async with gates[model]:
            response = await clients[model].chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}]
            )
        return bool(response.choices)

    try:
        # Warm up: open each client's connections.
        await asyncio.gather(
            *(one(m, "warm up") for m in names for _ in range(8))
        )
        fake.reset()  # a blocking call, but before the clock starts
        started = time.perf_counter()
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(one(model, text) for model, text in workload.prompts())
            ),
            timeout_s,
        )
        elapsed = time.perf_counter() - started
    finally:
        for client in clients.values():
            await client.close()
    return sum(answers), elapsed


def run_asyncio(
    fake: FakeServer, workload: Workload, *, timeout_s: float
) -> RunResult:
    """Run the workload as a plain asyncio script with the SDK.

    Args:
        fake: The fake server, already configured for the workload.
        workload: What to run.
        timeout_s: Give up (``TimeoutError``) after this long.

    Returns:
        The measurement, with this process's CPU per item in the notes.
    """
    cpu = time.process_time()
    done, elapsed = asyncio.run(_asyncio_run(fake, workload, timeout_s))
    cpu = time.process_time() - cpu
    return RunResult(
        "asyncio + openai SDK",
        workload,
        done,
        elapsed,
        notes=[f"client CPU {cpu / workload.items * 1000:.2f} ms/item"],
    )


def run_ray_data(
    fake: FakeServer,
    workload: Workload,
    state_dir: Path,
    *,
    batch_size: int,
    actors: int,
    batches_per_actor: int,
    qps: int | None,
    timeout_s: float,
) -> RunResult:
    """Run the workload through Ray Data LLM's HTTP request processor.

    Starts a local Ray cluster (offline settings) and shuts it down after.

    Args:
        fake: The fake server, already configured for the workload.
        workload: What to run.
        state_dir: For Ray's HOME.
        batch_size: Rows per batch of the HTTP stage.
        actors: Actors of the HTTP stage (a fixed pool).
        batches_per_actor: Batches an actor runs at once, that is calls
            in flight per actor (the stage sends a batch's requests one
            after another). Only the first run in a process sets it.
        qps: The stage's ``qps`` (per batch), or None.
        timeout_s: Give up (``TimeoutError``) after this long.

    Returns:
        The measurement.
    """
    # Ray Data runs this many batches of an async UDF at once in each
    # actor (default 4), and the HTTP stage sends a batch's requests one
    # after another: so this is the actor's number of calls in flight.
    # Ray Data reads it once, when first imported in this process.
    os.environ.setdefault(BATCHES_AT_ONCE_ENV, str(batches_per_actor))
    batches_per_actor = int(os.environ[BATCHES_AT_ONCE_ENV])
    import ray
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    from pipeline.cluster.runtime import init_local_ray

    init_local_ray(state_dir, num_cpus=2, log_to_driver=False)
    try:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        config = HttpRequestProcessorConfig(
            url=f"{fake.url}/v1/chat/completions",
            batch_size=batch_size,
            qps=qps,
            # A fixed pool (no ramp-up), each actor taking a share of one
            # CPU: the actors wait on the network, and the other CPU is
            # left to the map tasks around them.
            http_request_stage={
                "concurrency": (actors, actors),
                "num_cpus": 1 / actors,
            },
        )

        def payload(row: dict[str, Any]) -> dict[str, Any]:
            return {
                "payload": {
                    "model": row["model"],
                    "messages": [{"role": "user", "content": row["prompt"]}],
                }
            }

        def answered(row: dict[str, Any]) -> dict[str, Any]:
            return {"ok": bool(row["http_response"].get("choices"))}

        processor = build_processor(
            config, preprocess=payload, postprocess=answered
        )
        rows = [{"model": m, "prompt": p} for m, p in workload.prompts()]
        # Warm up: actors started, connections opened, code shipped.
        processor(ray.data.from_items(rows[: batch_size * 2])).take_all()
        fake.reset()
        dataset = processor(
            ray.data.from_items(rows, override_num_blocks=actors * 2)
        )
        started = time.perf_counter()
        done = 0
        for row in dataset.iter_rows():
            done += bool(row["ok"])
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"Ray Data: {done} rows in {timeout_s} s")
        elapsed = time.perf_counter() - started
    finally:
        ray.shutdown()
    return RunResult(
        "Ray Data LLM (HTTP)",
        workload,
        done,
        elapsed,
        notes=[
            f"batch_size {batch_size}, actors {actors} x "
            f"{batches_per_actor} batches at once, qps {qps}"
        ],
    )
