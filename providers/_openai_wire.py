"""The OpenAI chat-completions wire format, shared by its dialects.

OpenAI, Azure OpenAI, OpenAI-compatible servers (vLLM, Ollama, llama.cpp)
and Azure AI Inference all speak it: ``messages`` in, ``choices`` and
``usage`` out, and for streams ``data:`` chunks ending with
``data: [DONE]``. This module builds the messages, reads a completion
from its raw JSON body, and decodes streams (requiring the ``[DONE]``
marker and mapping an ``error`` object sent inside a 200 stream); the
adapters keep the SDK-specific parts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Mapping,
)
from typing import Any

from ._call import CallContext, normalize_finish_reason
from ._sse import iter_sse
from .base import Completion, CompletionRequest, Usage
from .errors import (
    ProviderError,
    RateLimitError,
    StreamError,
    TransientError,
)

DONE = "[DONE]"
_RATE_LIMIT_CODES = frozenset(
    {"429", "rate_limit_exceeded", "rate_limit_error", "too_many_requests"}
)


def chat_messages(request: CompletionRequest) -> list[dict[str, str]]:
    """Render a request's conversation as chat-completions messages.

    Args:
        request: The request.

    Returns:
        ``[{"role": ..., "content": ...}, ...]`` in order.
    """
    return [{"role": m.role, "content": m.content} for m in request.messages]


def usage_from(raw: Any) -> Usage:
    """Read ``prompt_tokens``/``completion_tokens`` from a usage object.

    Args:
        raw: A usage mapping, an SDK usage model, or None.

    Returns:
        The usage; zeros when the server reported none.
    """
    if raw is None:
        return Usage()
    if isinstance(raw, Mapping):
        prompt, completion = (
            raw.get("prompt_tokens"),
            raw.get("completion_tokens"),
        )
    else:
        prompt = getattr(raw, "prompt_tokens", None)
        completion = getattr(raw, "completion_tokens", None)
    return Usage(int(prompt or 0), int(completion or 0))


def completion_from_body(body: bytes, ctx: CallContext) -> Completion:
    """Read a ``chat.completion`` response body.

    Args:
        body: The raw JSON body of a 2xx response.
        ctx: The call's context (for latency and messages).

    Returns:
        The first choice's text and finish reason, usage, model and id.

    Raises:
        TransientError: The body is not JSON, or holds no choice (a
            server having a bad moment; the SDK's own models would fail
            on it too).
    """
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise TransientError(
            f"{ctx.provider}: malformed response: not JSON: "
            + ctx.safe_message(body[:200].decode(errors="replace"))
        ) from exc
    return completion_from_data(data, ctx)


def completion_from_data(data: Any, ctx: CallContext) -> Completion:
    """Read a decoded ``chat.completion`` (a response, or a batch line's).

    Args:
        data: The decoded JSON body.
        ctx: The call's context (for latency and messages).

    Returns:
        The first choice's text and finish reason, usage, model and id.

    Raises:
        TransientError: The body holds no choice.
    """
    choices = data.get("choices") if isinstance(data, Mapping) else None
    if not isinstance(choices, list) or not choices:
        raise TransientError(f"{ctx.provider}: the response had no choices")
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message")
    text = message.get("content") if isinstance(message, Mapping) else None
    return Completion(
        text=text if isinstance(text, str) else "",
        finish_reason=normalize_finish_reason(choice.get("finish_reason")),
        usage=usage_from(data.get("usage")),
        model=data.get("model"),
        latency_ms=ctx.elapsed_ms(),
        response_id=data.get("id"),
    )


def stream_error(
    payload: Mapping[str, Any], ctx: CallContext
) -> ProviderError:
    """Map an ``{"error": ...}`` object found inside a 200 stream.

    Args:
        payload: The decoded chunk holding ``error``.
        ctx: The call's context.

    Returns:
        :class:`RateLimitError` for a rate limit, else :class:`StreamError`
        (the server gave up mid-answer; a retry may well succeed).
    """
    error = payload.get("error")
    details = error if isinstance(error, Mapping) else {"message": error}
    message = ctx.safe_message(details.get("message") or details)
    markers = {
        str(details.get(key)).lower()
        for key in ("code", "type", "status")
        if details.get(key) is not None
    }
    if markers & _RATE_LIMIT_CODES:
        return RateLimitError(
            f"{ctx.provider}: rate limited mid-stream: {message}",
            status_code=429,
        )
    return StreamError(f"{ctx.provider}: error event in stream: {message}")


async def stream_chunks(
    body: AsyncIterable[bytes], ctx: CallContext
) -> AsyncGenerator[Mapping[str, Any], None]:
    """Decode a chat-completions stream into its JSON chunks.

    Args:
        body: The raw response body.
        ctx: The call's context.

    Yields:
        Each chunk object, up to the ``[DONE]`` marker.

    Raises:
        StreamError: The body ended without ``[DONE]``, or a chunk was not
            JSON, or carried an error.
        RateLimitError: A chunk carried a rate-limit error.
    """
    async for event in iter_sse(body):
        if event.data.strip() == DONE:
            return
        if not event.data:
            continue
        try:
            payload = json.loads(event.data)
        except ValueError as exc:
            raise StreamError(
                f"{ctx.provider}: stream chunk is not JSON: "
                + ctx.safe_message(event.data[:200])
            ) from exc
        if isinstance(payload, Mapping) and payload.get("error"):
            raise stream_error(payload, ctx)
        if isinstance(payload, Mapping):
            yield payload
    raise StreamError(
        f"{ctx.provider}: the stream ended without its [DONE] marker"
    )


class StreamAccumulator:
    """Builds the final completion from the chunks of one stream."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._finish: Any = None
        self._usage: Any = None
        self._model: str | None = None
        self._id: str | None = None

    def feed(self, chunk: Mapping[str, Any]) -> str | None:
        """Take one chunk in.

        Args:
            chunk: A decoded stream chunk.

        Returns:
            The text it adds, or None when it adds none.
        """
        self._id = self._id or chunk.get("id") or None
        self._model = self._model or chunk.get("model") or None
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        text: str | None = None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                text = content
                self._parts.append(content)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return text

    def completion(self, ctx: CallContext) -> Completion:
        """Build the completion once the stream is done.

        Args:
            ctx: The call's context (for latency).

        Returns:
            The completion with the joined text and the reported usage.
        """
        return Completion(
            text="".join(self._parts),
            finish_reason=normalize_finish_reason(self._finish),
            usage=usage_from(self._usage),
            model=self._model,
            latency_ms=ctx.elapsed_ms(),
            response_id=self._id,
        )


async def drain(body: AsyncIterator[bytes], seconds: float = 0.1) -> None:
    """Read what is left of a body after ``[DONE]``, briefly.

    A connection goes back to the pool only when its body was read to the
    end; a server that lingers after ``[DONE]`` is not waited for.

    Args:
        body: The body iterator the stream was read from.
        seconds: How long to wait for the end.
    """
    try:
        async with asyncio.timeout(seconds):
            async for _ in body:
                pass
    except Exception:
        # Best effort: the answer is complete, so a failure while draining
        # only costs the connection, never the result.
        pass
