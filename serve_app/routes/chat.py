"""``/v1/chat/completions``: OpenAI-compatible, under the model limits.

The call goes through the provider's worker, so it shares each model's
concurrency, rpm and tpm limits with batch work (and goes ahead of it).
Its estimated cost must fit in the client's budget, and its cost is
charged to the client when it ends.
``stream: true`` answers with server-sent events in OpenAI's chunk
format; the last chunk carries the usage.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from pipeline.catalog import max_tokens_problem
from pipeline.errors import (
    MetasyncError,
    NotFound,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    ValidationFailed,
)
from pipeline.jobs.estimate import estimate_cost, model_pricing
from pipeline.logging import get_logger
from pipeline.spending import ChatCharges
from providers.base import Completion, StreamEvent, TextDelta
from providers.errors import (
    PermanentError,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
)
from serve_app.deps import Context, CurrentClient
from serve_app.schemas.chat import ChatCompletionIn, usage_body
from serve_app.schemas.common import error_responses

router = APIRouter(tags=["chat"])
log = get_logger(__name__)


def upstream_error(error: ProviderError) -> MetasyncError:
    """The HTTP error a provider failure becomes."""
    message = f"{error.kind}: {error.message}"
    if isinstance(error, RateLimitError):
        mapped: MetasyncError = UpstreamRateLimited(message)
        mapped.details["retryAfter"] = error.retry_after or 1.0
        return mapped
    if isinstance(error, ProviderTimeout):
        return UpstreamTimeout(message)
    if isinstance(error, PermanentError):
        return UpstreamRejected(message)
    return UpstreamError(message)


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "description": "A `chat.completion`; with `stream: true`, "
            "server-sent events of `chat.completion.chunk`s, the usage in "
            "the last, then `data: [DONE]`.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                # One event (as OpenAPI 3.2 reads an event stream): its
                # data is a chunk as JSON, or `[DONE]`.
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {"data": {"type": "string"}},
                    }
                },
            },
        },
        **error_responses(400, 401, 404, 413, 429, 502, 503, 504),
    },
)
async def chat_completions(
    body: ChatCompletionIn, context: Context, client: CurrentClient
) -> JSONResponse | StreamingResponse:
    """Create a chat completion (``model`` is a catalog name)."""
    model = await context.catalog.get(body.model, active_only=True)
    if too_many := max_tokens_problem(model, body.max_output_tokens):
        raise ValidationFailed.single(body.max_tokens_field, too_many)
    provider = model["provider"]
    request = body.request()
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    pricing = model_pricing(model)
    charges = ChatCharges(context.store)
    await charges.check(
        client.id,
        client.quotas.budget,
        estimate_cost(
            pricing,
            sum(len(m.content) for m in request.messages),
            request.max_tokens,
        ),
    )

    async def charge(completion: Completion) -> None:
        usage = completion.usage
        await charges.charge(
            client.id,
            completion_id,
            pricing.cost(usage.input_tokens, usage.output_tokens),
        )

    if not body.stream:
        try:
            completion = await context.workers.complete(
                provider, body.model, request
            )
        except ProviderError as error:
            raise upstream_error(error) from None
        except KeyError:
            raise NotFound("model", body.model) from None
        await charge(completion)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": completion.text,
                        },
                        "finish_reason": completion.finish_reason,
                    }
                ],
                "usage": usage_body(
                    completion.usage.input_tokens,
                    completion.usage.output_tokens,
                ),
            }
        )
    events = context.workers.stream(provider, body.model, request)
    try:
        # Wait for the first event so an early failure is a plain HTTP
        # error rather than a broken stream.
        first = await anext(events)
    except ProviderError as error:
        raise upstream_error(error) from None
    except StopAsyncIteration:
        raise UpstreamError("the provider sent nothing") from None
    chunks = _sse(first, events, completion_id, created, body.model, charge)
    return StreamingResponse(chunks, media_type="text/event-stream")


def _chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


async def _sse(
    first: StreamEvent,
    events: AsyncIterator[StreamEvent],
    completion_id: str,
    created: int,
    model: str,
    charge: Callable[[Completion], Awaitable[None]],
) -> AsyncIterator[bytes]:
    yield _chunk(completion_id, created, model, {"role": "assistant"})

    async def all_events() -> AsyncIterator[StreamEvent]:
        yield first
        async for event in events:
            yield event

    try:
        async for event in all_events():
            if isinstance(event, TextDelta):
                yield _chunk(
                    completion_id, created, model, {"content": event.text}
                )
            elif isinstance(event, Completion):
                await charge(event)
                yield _chunk(
                    completion_id, created, model, {}, event.finish_reason
                )
                yield _chunk(
                    completion_id,
                    created,
                    model,
                    {},
                    usage=usage_body(
                        event.usage.input_tokens, event.usage.output_tokens
                    ),
                )
        yield b"data: [DONE]\n\n"
    except ProviderError as error:
        # Headers are gone: report in-band, as OpenAI does, and end
        # without [DONE] so clients see the stream as incomplete.
        log.warning("chat_stream_failed", error=str(error))
        body = {"error": {"message": error.message, "type": error.kind}}
        yield f"data: {json.dumps(body)}\n\n".encode()
