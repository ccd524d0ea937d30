"""OpenAI chat completions, and any server that speaks them.

:class:`OpenAIChatAdapter` is the wire adapter: it sends chat-completions
requests through an ``openai.AsyncOpenAI`` client and reads the answers
back. Azure OpenAI reuses it with a client built differently (see
:mod:`providers.azure_openai`). :class:`OpenAIProvider` (registry name
``openai``) builds the plain client, for api.openai.com or any
OpenAI-compatible base URL (vLLM, Ollama, llama.cpp server).

Config fields: ``modelId`` (required), ``baseUrl`` (default
``https://api.openai.com/v1``), ``maxTokensParam`` (``max_completion_tokens``
by default; ``max_tokens`` for servers that only know the older name),
plus ``timeoutSeconds``, ``auth`` and ``apiKeyEnv``.

Streams are requested with ``stream_options.include_usage`` so the last
chunk carries usage, and are read as raw server-sent events because the
SDK's iterator cannot tell a stream that lost its ``data: [DONE]`` from a
complete one.

CPU per call matters here (a worker makes hundreds of calls a second):
a whole answer is posted with the SDK's untyped ``post`` and read from
its raw JSON, skipping the typed request transformation and response
models, and every client runs on the SDK's aiohttp transport instead of
``httpcore2``. Together they cut a call's CPU by about 60 %; auth, base
URLs and the SDK's error types are unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._adapter import AdapterSettings, SDKAdapter
from ._call import CallContext
from ._config import CommonSettings, ConfigReader
from ._openai_errors import map_openai_error
from ._openai_wire import (
    StreamAccumulator,
    chat_messages,
    completion_from_body,
    drain,
    stream_chunks,
)
from .base import Completion, CompletionRequest, StreamEvent, TextDelta
from .errors import ProviderError, TransientError

if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: The endpoint, relative to the client's base URL.
CHAT_PATH = "/chat/completions"
MAX_TOKENS_PARAMS = ("max_completion_tokens", "max_tokens")


def aiohttp_client(timeout_seconds: float) -> httpx2.AsyncClient:
    """The SDK's HTTP client on its aiohttp transport.

    ``openai.DefaultAioHttpClient`` is the SDK's own option: the same
    ``httpx2`` interface (so auth, redirects and error types are the
    SDK's), with aiohttp underneath instead of ``httpcore2``, which cost
    about half of a non-streaming call's CPU.

    Args:
        timeout_seconds: The client's default timeout.

    Returns:
        A client for ``http_client=`` of ``AsyncOpenAI`` and its kin.
    """
    from openai import DefaultAioHttpClient

    client: httpx2.AsyncClient = DefaultAioHttpClient(timeout=timeout_seconds)
    return client


def _connection_failure(exc: Exception) -> BaseException | None:
    """The aiohttp connection error behind a reported timeout, if any."""
    import aiohttp
    import httpx2
    import openai

    if not isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return None
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectionError):
            return None if isinstance(cause, TimeoutError) else cause
        cause = cause.__cause__
    return None


class OpenAIWireSettings(AdapterSettings, Protocol):
    """What the wire adapter needs from a dialect's settings."""

    @property
    def wire_model(self) -> str:
        """The ``model`` sent in the request body."""
        ...

    @property
    def max_tokens_param(self) -> str:
        """The body field that carries the output token cap."""
        ...


W = TypeVar("W", bound=OpenAIWireSettings)


class OpenAIChatAdapter(SDKAdapter[W, "AsyncOpenAI"]):
    """Chat completions over an ``AsyncOpenAI`` client (or a subclass)."""

    def map_error(
        self, exc: Exception, ctx: CallContext
    ) -> ProviderError | None:
        """Translate an ``openai`` SDK exception.

        The aiohttp transport reports a connection that failed without
        timing out (refused, reset, closed by the server) as a connect
        timeout; it is mapped as the connection failure it is.
        """
        failure = _connection_failure(exc)
        if failure is not None:
            return TransientError(
                f"{ctx.provider}: connection failed: {type(failure).__name__}"
            )
        return map_openai_error(exc, ctx)

    async def close_client(self, client: AsyncOpenAI) -> None:
        """Release the client's connection pool."""
        await client.close()

    def request_body(
        self, settings: W, request: CompletionRequest
    ) -> dict[str, Any]:
        """The chat-completions body of a request (also a batch line's).

        Args:
            settings: The model's settings.
            request: What to ask.

        Returns:
            The JSON body.
        """
        body: dict[str, Any] = {
            "model": settings.wire_model,
            "messages": chat_messages(request),
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body[settings.max_tokens_param] = request.max_tokens
        return body

    async def call(
        self,
        client: AsyncOpenAI,
        settings: W,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> Completion:
        """Make one chat-completions call.

        Sent through the SDK's untyped ``post`` (the client's auth,
        base URL, Azure routing and error types as ever) and read from
        the raw JSON: the typed layer (request transformation, response
        models) cost more CPU than the rest of the call.
        """
        import httpx2

        response = await client.post(
            CHAT_PATH,
            body=self.request_body(settings, request),
            cast_to=httpx2.Response,
        )
        return completion_from_body(response.content, ctx)

    async def call_stream(
        self,
        client: AsyncOpenAI,
        settings: W,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> AsyncIterator[StreamEvent]:
        """Make one streaming chat-completions call."""
        body = self.request_body(settings, request)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        accumulator = StreamAccumulator()
        streamed = client.chat.completions.with_streaming_response
        async with streamed.create(**body) as response:
            ctx.streaming = True
            raw = response.iter_bytes()
            async with aclosing(stream_chunks(raw, ctx)) as chunks:
                async for chunk in chunks:
                    text = accumulator.feed(chunk)
                    if text:
                        yield TextDelta(text)
            await drain(raw)
        yield accumulator.completion(ctx)


@dataclass(frozen=True, slots=True)
class OpenAISettings:
    """A model's config for api.openai.com or a compatible server."""

    common: CommonSettings
    model_id: str
    base_url: str = DEFAULT_BASE_URL
    max_tokens_param: str = MAX_TOKENS_PARAMS[0]

    @property
    def wire_model(self) -> str:
        """The model id sent on the wire."""
        return self.model_id

    @property
    def model_label(self) -> str:
        """The model id, for error messages."""
        return self.model_id


class OpenAIProvider(OpenAIChatAdapter[OpenAISettings]):
    """OpenAI and OpenAI-compatible servers (registry name ``openai``)."""

    name = "openai"

    def parse_settings(self, config: Mapping[str, Any]) -> OpenAISettings:
        """Read an ``openai`` model config.

        Args:
            config: The model's provider config.

        Returns:
            The settings.

        Raises:
            ConfigError: Naming the first offending field.
        """
        reader = ConfigReader(
            config, self.name, ("modelId", "baseUrl", "maxTokensParam")
        )
        return OpenAISettings(
            common=reader.common(),
            model_id=reader.required_text("modelId"),
            base_url=reader.url("baseUrl") or DEFAULT_BASE_URL,
            max_tokens_param=reader.choice(
                "maxTokensParam", MAX_TOKENS_PARAMS, MAX_TOKENS_PARAMS[0]
            ),
        )

    def build_client(
        self, settings: OpenAISettings, api_key: str | None
    ) -> AsyncOpenAI:
        """Make an ``AsyncOpenAI`` client with SDK retries off."""
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            api_key=api_key,
            base_url=settings.base_url,
            timeout=settings.common.timeout_seconds,
            max_retries=0,
            http_client=aiohttp_client(settings.common.timeout_seconds),
        )
