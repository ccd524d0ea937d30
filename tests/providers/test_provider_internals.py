"""The shared plumbing: retry-after parsing, SSE decoding, client cache."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator

import pytest

from providers._call import CallContext, error_boundary
from providers._clients import ClientCache
from providers._openai_wire import completion_from_body
from providers._retry_after import (
    retry_after,
    retry_after_from_google_details,
    retry_after_from_headers,
)
from providers._sse import SSEEvent, iter_sse
from providers.base import Usage
from providers.errors import (
    ProviderError,
    ProviderTimeout,
    StreamError,
    TransientError,
)

NOW = 1_800_000_000.0


def test_retry_after_seconds_and_fractions() -> None:
    assert retry_after_from_headers({"Retry-After": "7"}) == 7.0
    assert retry_after_from_headers({"retry-after": "0.5"}) == 0.5


def test_retry_after_http_date() -> None:
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert retry_after_from_headers({"Retry-After": date}, now=NOW) == 30.0
    past = email.utils.formatdate(NOW - 30, usegmt=True)
    assert retry_after_from_headers({"Retry-After": past}, now=NOW) == 0.0


def test_retry_after_garbage_is_ignored() -> None:
    assert retry_after_from_headers({"Retry-After": "soon"}) is None
    assert retry_after_from_headers({}) is None
    assert retry_after_from_headers(None) is None


def test_retry_after_ms_takes_precedence() -> None:
    headers = {"Retry-After": "3", "retry-after-ms": "250"}
    assert retry_after(headers) == 0.25


def test_google_retry_info() -> None:
    body = {
        "error": {
            "code": 429,
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo"},
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": "2.5s",
                },
            ],
        }
    }
    assert retry_after_from_google_details(body) == 2.5
    # RetryInfo beats Retry-After, retry-after-ms beats both.
    assert retry_after({"Retry-After": "9"}, body) == 2.5
    assert retry_after({"retry-after-ms": "100"}, body) == 0.1
    assert retry_after_from_google_details({"error": {}}) is None
    assert retry_after_from_google_details("nope") is None


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.anyio
async def test_sse_decoding_across_chunk_boundaries() -> None:
    body = _chunks(
        b"event: ping\r\ndata: {}\r\n\r\n: comment\n",
        b"da",
        b'ta: {"a":\n',
        b"data: 1}\n\ndata: [DONE]",
    )
    events = [event async for event in iter_sse(body)]
    assert events == [
        SSEEvent("ping", "{}"),
        SSEEvent(None, '{"a":\n1}'),
        SSEEvent(None, "[DONE]"),
    ]


@pytest.mark.anyio
async def test_client_cache_builds_once_per_settings_and_key() -> None:
    built: list[tuple[str, str | None]] = []
    closed: list[object] = []

    async def close(client: object) -> None:
        closed.append(client)

    cache: ClientCache[str, object] = ClientCache(
        lambda s, k: built.append((s, k)) or object(), close
    )
    first = cache.get("a", "key-1")
    assert cache.get("a", "key-1") is first
    assert cache.get("a", "key-2") is not first
    assert cache.get("b", "key-1") is not first
    assert len(built) == 3
    assert "key-1" not in repr(cache)
    await cache.aclose()
    assert len(closed) == 3


def test_client_cache_keeps_clients_per_event_loop() -> None:
    cache: ClientCache[str, object] = ClientCache(
        lambda s, k: object(), lambda c: asyncio.sleep(0)
    )

    async def get() -> object:
        return cache.get("a", None)

    assert asyncio.run(get()) is not asyncio.run(get())


def test_call_context_never_shows_the_key() -> None:
    ctx = CallContext("openai", "m", api_key="sk-very-secret-123")
    assert "sk-very" not in repr(ctx)
    assert ctx.safe_message("bad key sk-very-secret-123!") == "bad key ***!"
    assert len(ctx.safe_message("x" * 5000)) < 600


def _mapper(exc: Exception, ctx: CallContext) -> ProviderError | None:
    if isinstance(exc, ConnectionResetError):
        from providers.errors import TransientError

        return TransientError("reset")
    return None


def test_error_boundary_maps_and_stamps() -> None:
    ctx = CallContext("openai", "m")
    with (
        pytest.raises(ProviderTimeout) as timeout,
        error_boundary(ctx, _mapper),
    ):
        raise TimeoutError
    assert (timeout.value.provider, timeout.value.model) == ("openai", "m")
    with pytest.raises(ProviderError) as unknown, error_boundary(ctx, _mapper):
        raise KeyError("surprise")
    assert type(unknown.value) is ProviderError
    assert "KeyError" in str(unknown.value)
    ctx.streaming = True
    with pytest.raises(StreamError), error_boundary(ctx, _mapper):
        raise ConnectionResetError


def test_error_boundary_lets_cancellation_through() -> None:
    with (
        pytest.raises(asyncio.CancelledError),
        error_boundary(CallContext("openai", "m"), _mapper),
    ):
        raise asyncio.CancelledError


def test_completion_is_read_from_the_raw_body() -> None:
    body = (
        b'{"id": "c1", "model": "m", "choices": [{"index": 0, "message": '
        b'{"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],'
        b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}'
    )
    completion = completion_from_body(body, CallContext("openai", "m"))
    assert (completion.text, completion.finish_reason) == ("hi", "stop")
    assert (completion.model, completion.response_id) == ("m", "c1")
    assert completion.usage == Usage(3, 1)
    no_content = b'{"choices": [{"message": {"content": null}}]}'
    assert completion_from_body(no_content, CallContext("o", "m")).text == ""


@pytest.mark.parametrize(
    "body", [b"<html>busy</html>", b'{"choices": []}', b"[]", b"{}"]
)
def test_a_body_without_a_choice_is_transient(body: bytes) -> None:
    with pytest.raises(TransientError):
        completion_from_body(body, CallContext("openai", "m"))
