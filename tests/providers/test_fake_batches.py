"""The fake provider's batch APIs, read through the vendors' own SDKs.

Every response is parsed by the SDK's typed models, so a shape the SDK
would not accept fails here. Batches are waited for by polling their
status (the fake's clock runs in milliseconds), never by sleeping a
fixed time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types
from openai import AsyncAzureOpenAI, AsyncOpenAI

from providers.fake import BehaviourError, FakeProviderServer

pytestmark = pytest.mark.anyio
T = TypeVar("T")
_ids = itertools.count()
_WAIT_SECONDS = 60.0
_OPENAI_ENDED = {"completed", "failed", "expired", "cancelled"}


def model_id(name: str) -> str:
    return f"fb-{name}-{next(_ids)}"


async def until(
    poll: Callable[[], Awaitable[T]], done: Callable[[T], bool]
) -> T:
    async with asyncio.timeout(_WAIT_SECONDS):
        while True:
            value = await poll()
            if done(value):
                return value
            await asyncio.sleep(0.02)


def openai_lines(model: str, ids: list[str], url: str) -> bytes:
    return "\n".join(
        json.dumps(
            {
                "custom_id": cid,
                "method": "POST",
                "url": url,
                "body": {
                    "model": model,
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": f"echo {cid}"},
                    ],
                },
            }
        )
        for cid in ids
    ).encode()


async def run_openai(
    client: AsyncOpenAI, model: str, ids: list[str], url: str
) -> Any:
    uploaded = await client.files.create(
        file=("in.jsonl", openai_lines(model, ids, url)), purpose="batch"
    )
    batch = await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=url,  # type: ignore[arg-type]
        completion_window="24h",
    )
    assert batch.status == "validating"
    return await until(
        lambda: client.batches.retrieve(batch.id),
        lambda b: b.status in _OPENAI_ENDED,
    )


async def file_lines(client: AsyncOpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines()]


@pytest.fixture
async def openai_client(fake: FakeProviderServer) -> Any:
    client = AsyncOpenAI(api_key="k", base_url=f"{fake.url}/v1", max_retries=0)
    yield client
    await client.close()


async def test_openai_batch_answers_like_live_calls_and_fails_chosen_lines(
    fake: FakeProviderServer, openai_client: AsyncOpenAI
) -> None:
    model = model_id("openai")
    fake.configure(
        models={
            model: {
                "reply": "fixed answer",
                "batch": {
                    "durationMs": 100,
                    "lineErrors": {"customIds": ["b"], "status": 429},
                },
            }
        }
    )
    before = fake.batch_stats().get("openai", {})
    batch = await run_openai(
        openai_client, model, ["a", "b", "c"], "/v1/chat/completions"
    )
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (
        2,
        1,
    )
    outputs = await file_lines(openai_client, batch.output_file_id)
    assert [o["custom_id"] for o in outputs] == ["a", "c"]
    body = outputs[0]["response"]["body"]
    assert body["choices"][0]["message"]["content"] == "fixed answer"
    assert body["usage"]["completion_tokens"] == 2
    errors = await file_lines(openai_client, batch.error_file_id)
    assert [
        (e["custom_id"], e["response"]["status_code"]) for e in errors
    ] == [("b", 429)]
    after = fake.batch_stats()["openai"]
    assert after["creates"] - before.get("creates", 0) == 1
    assert after["files"] - before.get("files", 0) == 1
    assert after["polls"] - before.get("polls", 0) >= 1


async def test_openai_expired_batch_keeps_partial_results(
    fake: FakeProviderServer, openai_client: AsyncOpenAI
) -> None:
    model = model_id("expire")
    fake.configure(
        models={
            model: {
                "batch": {
                    "durationMs": 50,
                    "outcome": "expired",
                    "finishedFraction": 0.5,
                }
            }
        }
    )
    ids = [f"r{i}" for i in range(40)]
    batch = await run_openai(openai_client, model, ids, "/v1/chat/completions")
    assert batch.status == "expired"
    done = await file_lines(openai_client, batch.output_file_id)
    expired = await file_lines(openai_client, batch.error_file_id)
    assert {e["error"]["code"] for e in expired} == {"batch_expired"}
    assert 0 < len(done) < len(ids)
    assert sorted(d["custom_id"] for d in done + expired) == sorted(ids)


async def test_openai_malformed_file_fails_the_batch(
    fake: FakeProviderServer, openai_client: AsyncOpenAI
) -> None:
    bad = b'{"custom_id": "a", "method": "POST"}\nnot json\n'
    uploaded = await openai_client.files.create(
        file=("in.jsonl", bad), purpose="batch"
    )
    batch = await openai_client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    batch = await until(
        lambda: openai_client.batches.retrieve(batch.id),
        lambda b: b.status in _OPENAI_ENDED,
    )
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data
    assert any("line 2" in (e.message or "") for e in batch.errors.data)
    assert batch.output_file_id is None


async def test_azure_openai_batch_cancel(fake: FakeProviderServer) -> None:
    model = model_id("azure")
    fake.configure(models={model: {"batch": {"durationMs": 60_000}}})
    client = AsyncAzureOpenAI(
        api_key="k",
        azure_endpoint=fake.url,
        azure_deployment=model,
        api_version="2024-10-21",
        max_retries=0,
    )
    async with client:
        uploaded = await client.files.create(
            file=(
                "in.jsonl",
                openai_lines(model, ["x", "y"], "/chat/completions"),
            ),
            purpose="batch",
        )
        batch = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/chat/completions",  # type: ignore[arg-type]
            completion_window="24h",
        )
        cancelling = await client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        batch = await client.batches.retrieve(batch.id)
        assert batch.status == "cancelled"
        lines = await file_lines(client, batch.error_file_id)
    assert {ln["error"]["code"] for ln in lines} == {"batch_cancelled"}
    assert fake.batch_stats()["azure_openai"]["cancels"] >= 1


async def test_azure_routes_need_the_api_version(
    fake: FakeProviderServer,
) -> None:
    client = AsyncOpenAI(
        api_key="k", base_url=f"{fake.url}/openai", max_retries=0
    )
    async with client:
        with pytest.raises(openai.BadRequestError, match="api-version"):
            await client.batches.retrieve("batch_missing")


async def test_anthropic_message_batch(fake: FakeProviderServer) -> None:
    model = model_id("anthropic")
    fake.configure(
        models={
            model: {
                "batch": {
                    "durationMs": 100,
                    "lineErrors": {"customIds": ["b"]},
                }
            }
        }
    )
    client = anthropic.AsyncAnthropic(
        api_key="k", base_url=fake.url, max_retries=0
    )
    async with client:
        params = [
            {
                "custom_id": cid,
                "params": {
                    "model": model,
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"echo {cid}"}],
                },
            }
            for cid in ("a", "b")
        ]
        params.append({"custom_id": "c", "params": {"model": model}})
        batch = await client.messages.batches.create(requests=params)  # type: ignore[arg-type]
        assert batch.processing_status == "in_progress"
        batch = await until(
            lambda: client.messages.batches.retrieve(batch.id),
            lambda b: b.processing_status == "ended",
        )
        counts = batch.request_counts
        assert (counts.succeeded, counts.errored) == (1, 2)
        results = {
            r.custom_id: r.result
            async for r in await client.messages.batches.results(batch.id)
        }
    assert results["a"].type == "succeeded"
    assert results["a"].message.content[0].text == "echo a"  # type: ignore[union-attr]
    assert results["b"].type == "errored"
    assert results["b"].error.error.type == "api_error"  # type: ignore[union-attr]
    assert results["c"].type == "errored"
    assert "max_tokens" in results["c"].error.error.message  # type: ignore[union-attr]


async def test_anthropic_rejects_repeated_custom_ids(
    fake: FakeProviderServer,
) -> None:
    client = anthropic.AsyncAnthropic(
        api_key="k", base_url=fake.url, max_retries=0
    )
    request = {
        "custom_id": "same",
        "params": {"model": "m", "max_tokens": 1, "messages": []},
    }
    async with client:
        with pytest.raises(anthropic.BadRequestError, match="not unique"):
            await client.messages.batches.create(requests=[request, request])  # type: ignore[list-item]


async def test_gemini_inline_batch(fake: FakeProviderServer) -> None:
    model = model_id("gemini")
    fake.configure(
        models={
            model: {
                "batch": {
                    "durationMs": 100,
                    "lineErrors": {"customIds": ["line-1"]},
                }
            }
        }
    )
    client = genai.Client(
        api_key="k",
        http_options=genai_types.HttpOptions(
            base_url=fake.url,
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )
    requests: Any = [
        {
            "contents": [{"role": "user", "parts": [{"text": f"echo {i}"}]}],
            "config": {"system_instruction": "Be brief."},
            "metadata": {"key": str(i)},
        }
        for i in range(3)
    ]
    job = await client.aio.batches.create(model=model, src=requests)
    assert job.state == genai_types.JobState.JOB_STATE_PENDING
    assert job.name is not None
    name = job.name
    job = await until(
        lambda: client.aio.batches.get(name=name),
        lambda j: bool(j.done),
    )
    assert job.state == genai_types.JobState.JOB_STATE_SUCCEEDED
    assert job.dest is not None and job.dest.inlined_responses is not None
    responses = job.dest.inlined_responses
    assert [r.metadata for r in responses] == [
        {"key": str(i)} for i in range(3)
    ]
    assert responses[0].response is not None
    assert responses[0].response.text == "echo 0"
    assert responses[1].error is not None and responses[1].error.code == 13
    await client.aio.aclose()


async def test_gemini_cancel_gives_no_output(fake: FakeProviderServer) -> None:
    model = model_id("gemini-cancel")
    fake.configure(models={model: {"batch": {"durationMs": 60_000}}})
    client = genai.Client(
        api_key="k",
        http_options=genai_types.HttpOptions(
            base_url=fake.url,
            api_version="v1beta",
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )
    src: Any = [{"contents": [{"role": "user", "parts": [{"text": "x"}]}]}]
    job = await client.aio.batches.create(model=model, src=src)
    assert job.name is not None
    await client.aio.batches.cancel(name=job.name)
    job = await client.aio.batches.get(name=job.name)
    assert job.state == genai_types.JobState.JOB_STATE_CANCELLED
    assert job.dest is None
    await client.aio.aclose()


def test_batch_behaviour_is_validated(fake: FakeProviderServer) -> None:
    with pytest.raises(BehaviourError, match=r"batch\.outcome"):
        fake.configure(models={"x": {"batch": {"outcome": "exploded"}}})
    with pytest.raises(BehaviourError, match=r"lineErrors\.status"):
        fake.configure(
            models={"x": {"batch": {"lineErrors": {"status": 418}}}}
        )
