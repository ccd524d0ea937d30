"""The Python API of offline batches: run or cancel one from a script.

::

    from pipeline.batch import BatchOptions, run_batch

    result = run_batch(
        "requests.jsonl",
        "results.jsonl",
        options=BatchOptions(priority=5),
        on_progress=print,
    )
    print(result.totals.written, result.totals.cost)

The client is the one whose key ``api_key`` (else ``METASYNC_API_KEY``)
is. With ``url`` (else ``METASYNC_URL``) the batch goes through that
service's HTTP API; without, straight to the local service's database
and Ray cluster (or ``DB_CONNECTION_STRING`` and ``RAY_ADDRESS``).
Calling again with the same files continues an interrupted batch.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from pipeline.batch.backend import JobsBackend
from pipeline.batch.driver import BatchDriver
from pipeline.batch.errors import BatchError
from pipeline.batch.records import (
    BatchOptions,
    BatchResult,
    CancelReport,
    OnProgress,
)

#: The variable holding the client key (a secret: never an argument).
KEY_VARIABLE = "METASYNC_API_KEY"
#: The variable naming the service's URL.
URL_VARIABLE = "METASYNC_URL"

T = TypeVar("T")
Opener = Callable[[], Awaitable[JobsBackend]]


def backend_opener(url: str | None, api_key: str | None) -> Opener:
    """How to reach the service; joins Ray now when there is no URL.

    Raises:
        BatchError: No client key.
        RuntimeError: No URL and no local service.
    """
    key = api_key or os.environ.get(KEY_VARIABLE)
    if not key:
        raise BatchError(
            f"set {KEY_VARIABLE} to a client key (`metasync admin "
            "create-client NAME` prints one)"
        )
    url = url or os.environ.get(URL_VARIABLE)
    if url:
        from pipeline.batch.http_backend import HttpBackend

        async def open_http() -> JobsBackend:
            return HttpBackend(url, key)

        return open_http
    from pipeline.batch.direct_backend import DirectBackend
    from pipeline.connect import join_ray, local_settings

    settings = local_settings(", or give --url")
    join_ray(settings)

    async def open_direct() -> JobsBackend:
        return await DirectBackend.open(settings, key)

    return open_direct


async def _with_backend(
    opener: Opener, use: Callable[[JobsBackend], Awaitable[T]]
) -> T:
    backend = await opener()
    try:
        return await use(backend)
    finally:
        await backend.close()


def run_batch(
    input_path: str | Path,
    output_path: str | Path,
    *,
    url: str | None = None,
    api_key: str | None = None,
    options: BatchOptions | None = None,
    on_progress: OnProgress | None = None,
) -> BatchResult:
    """Run a batch to its end, or continue it.

    Args:
        input_path: The requests, one JSON object a line.
        output_path: Where the results go (and, beside it, the state).
        url: The service's URL; None runs on the local service.
        api_key: The client's key; ``METASYNC_API_KEY`` by default.
        options: Options of a new batch (a resumed one keeps its own).
        on_progress: Called with a :class:`Progress` as the run goes.

    Returns:
        What was written.

    Raises:
        BatchError: Bad lines, a state of another batch, and the like.
        MetasyncError: The service refused (the key, for example).
        KeyboardInterrupt: Interrupted; calling again continues.
    """

    def use(backend: JobsBackend) -> Awaitable[BatchResult]:
        driver = BatchDriver(
            backend, Path(input_path), Path(output_path), options, on_progress
        )
        return driver.run()

    return asyncio.run(_with_backend(backend_opener(url, api_key), use))


def cancel_batch(
    input_path: str | Path,
    output_path: str | Path,
    *,
    url: str | None = None,
    api_key: str | None = None,
) -> CancelReport:
    """Cancel a batch's jobs; running it again writes what finished.

    Raises:
        BatchError: No batch writes this output.
    """

    def use(backend: JobsBackend) -> Awaitable[CancelReport]:
        driver = BatchDriver(backend, Path(input_path), Path(output_path))
        return driver.cancel()

    return asyncio.run(_with_backend(backend_opener(url, api_key), use))
