"""Adapter CPU: what one provider call costs the caller's process.

Runs N non-streaming calls (K at a time) against the fake provider (its
own process, zero latency) through:

* ``adapter``: the project's adapter (``providers.get_provider``), as the
  worker calls it; ``adapter-stream``: the same, streamed;
* ``sdk-typed``: ``AsyncOpenAI.chat.completions.create`` alone;
* ``httpx2``: a bare ``httpx2.AsyncClient`` POST and ``json.loads``, the
  floor for any client on this HTTP stack;

and prints CPU milliseconds per call (``time.process_time``) and calls
per second. Only this process's CPU counts; the fake server's does not.

Usage: ``python benchmarks/adapter_cpu.py [--calls N] [--concurrency K]
[--paths adapter,sdk-typed,httpx2] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._fake import FakeServer

MODEL = "cpu-probe"
PATHS = ("adapter", "adapter-stream", "sdk-typed", "httpx2")

Call = Callable[[int], Awaitable[object]]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS))
    return parser.parse_args()


async def _measure(call: Call, calls: int, concurrency: int) -> float:
    """CPU ms per call of ``calls`` calls, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(concurrency * 2)))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"    {calls / wall:,.0f} calls/s", end="")
    return cpu / calls * 1000


async def _run(args: argparse.Namespace, url: str) -> None:
    import httpx2
    from openai import AsyncOpenAI

    from providers import get_provider
    from providers.base import CompletionRequest
    from providers.fake import fake_model_config

    adapter = get_provider("openai")
    config = fake_model_config("openai", MODEL, url, timeoutSeconds=30)
    sdk = AsyncOpenAI(api_key="x", base_url=f"{url}/v1", max_retries=0)
    bare = httpx2.AsyncClient(
        base_url=url, limits=httpx2.Limits(max_connections=1000)
    )

    async def via_adapter(i: int) -> object:
        request = CompletionRequest.from_prompts(None, f"item {i}")
        return await adapter.complete(config, request, None)

    async def via_adapter_stream(i: int) -> object:
        request = CompletionRequest.from_prompts(None, f"item {i}")
        return [e async for e in adapter.stream(config, request, None)]

    async def via_sdk(i: int) -> object:
        return await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"item {i}"}]
        )

    async def via_httpx2(i: int) -> object:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"item {i}"}],
        }
        response = await bare.post(
            "/v1/chat/completions",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        return json.loads(response.content)

    calls: dict[str, Call] = {
        "adapter": via_adapter,
        "adapter-stream": via_adapter_stream,
        "sdk-typed": via_sdk,
        "httpx2": via_httpx2,
    }
    try:
        for path in args.paths.split(","):
            runs = []
            print(f"{path}:")
            for _ in range(args.repeat):
                runs.append(
                    await _measure(calls[path], args.calls, args.concurrency)
                )
                print(f", {runs[-1]:.3f} ms CPU per call")
            print(
                f"  {path}: CPU per call {min(runs):.3f}-{max(runs):.3f} ms "
                f"(median {statistics.median(runs):.3f}) over {args.repeat} "
                f"runs of {args.calls}"
            )
    finally:
        await adapter.aclose()
        await sdk.close()
        await bare.aclose()


def main() -> None:
    args = _parse()
    with tempfile.TemporaryDirectory(prefix="msbench-") as state:
        fake = FakeServer(Path(state))
        try:
            fake.configure({MODEL: {"latencyMs": 0}})
            asyncio.run(_run(args, fake.url))
        finally:
            fake.stop()


if __name__ == "__main__":
    main()
