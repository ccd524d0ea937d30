"""Anthropic Messages API (``anthropic`` SDK).

Registry name ``anthropic``. Config fields: ``modelId`` (required),
``baseUrl`` (default ``https://api.anthropic.com``), ``defaultMaxTokens``
(the API requires a cap; used when a request has none, default 4096),
``apiVersion`` (the ``anthropic-version`` header; the SDK's own by
default), plus ``timeoutSeconds``, ``auth`` and ``apiKeyEnv``.

API version 2026-10-21 (the SDK's default) rejects sampling parameters,
and the SDK no longer accepts them: a request's ``temperature`` is sent
only when ``apiVersion`` pins an earlier version that accepts it, and is
otherwise left out.

Usage is split over a stream: input tokens in ``message_start``, output
tokens (cumulative) in ``message_delta``; a stream without
``message_stop`` is an error. Cache reads and writes count as input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._adapter import SDKAdapter
from ._anthropic_errors import map_anthropic_error
from ._call import CallContext, normalize_finish_reason
from ._config import CommonSettings, ConfigReader
from .base import (
    Completion,
    CompletionRequest,
    StreamEvent,
    TextDelta,
    Usage,
)
from .errors import ProviderError, StreamError

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
# The first API version that rejects temperature, top_p and top_k.
SAMPLING_REMOVED_IN = "2026-10-21"
FINISH_ALIASES = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


@dataclass(frozen=True, slots=True)
class AnthropicSettings:
    """A model's config for the Anthropic API."""

    common: CommonSettings
    model_id: str
    base_url: str = DEFAULT_BASE_URL
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    api_version: str | None = None

    @property
    def model_label(self) -> str:
        """The model id, for error messages."""
        return self.model_id

    @property
    def accepts_temperature(self) -> bool:
        """Whether the pinned API version still takes sampling parameters."""
        return (
            self.api_version is not None
            and self.api_version < SAMPLING_REMOVED_IN
        )


def _input_tokens(usage: Any) -> int:
    """Input tokens including cache reads and writes, which are billed."""
    return sum(
        int(getattr(usage, name, None) or 0)
        for name in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    )


def completion_from_message(message: Message, ctx: CallContext) -> Completion:
    """Read a whole ``Message`` (a response, or a batch result's).

    Args:
        message: The SDK's message.
        ctx: The call's context (for latency).

    Returns:
        The completion.
    """
    text = "".join(
        block.text for block in message.content if block.type == "text"
    )
    return Completion(
        text=text,
        finish_reason=normalize_finish_reason(
            message.stop_reason, FINISH_ALIASES
        ),
        usage=Usage(_input_tokens(message.usage), message.usage.output_tokens),
        model=message.model,
        latency_ms=ctx.elapsed_ms(),
        response_id=message.id,
    )


class AnthropicProvider(SDKAdapter[AnthropicSettings, "AsyncAnthropic"]):
    """Claude models through ``anthropic.AsyncAnthropic``."""

    name = "anthropic"

    def parse_settings(self, config: Mapping[str, Any]) -> AnthropicSettings:
        """Read an ``anthropic`` model config.

        Args:
            config: The model's provider config.

        Returns:
            The settings.

        Raises:
            ConfigError: Naming the first offending field.
        """
        reader = ConfigReader(
            config,
            self.name,
            ("modelId", "baseUrl", "defaultMaxTokens", "apiVersion"),
        )
        return AnthropicSettings(
            common=reader.common(),
            model_id=reader.required_text("modelId"),
            base_url=reader.url("baseUrl") or DEFAULT_BASE_URL,
            default_max_tokens=reader.positive_int(
                "defaultMaxTokens", DEFAULT_MAX_TOKENS
            ),
            api_version=reader.text("apiVersion"),
        )

    def build_client(
        self, settings: AnthropicSettings, api_key: str | None
    ) -> AsyncAnthropic:
        """Make an ``AsyncAnthropic`` client with SDK retries off."""
        from anthropic import AsyncAnthropic

        headers = (
            {"anthropic-version": settings.api_version}
            if settings.api_version
            else None
        )
        return AsyncAnthropic(
            api_key=api_key,
            base_url=settings.base_url,
            timeout=settings.common.timeout_seconds,
            max_retries=0,
            default_headers=headers,
            # Tracing belongs to the pipeline, not to each SDK.
            open_telemetry=False,
        )

    async def close_client(self, client: AsyncAnthropic) -> None:
        """Release the client's connection pool."""
        await client.close()

    def map_error(
        self, exc: Exception, ctx: CallContext
    ) -> ProviderError | None:
        """Translate an ``anthropic`` SDK exception."""
        return map_anthropic_error(exc, ctx)

    def message_params(
        self, settings: AnthropicSettings, request: CompletionRequest
    ) -> dict[str, Any]:
        """The ``messages.create`` arguments of a request.

        Args:
            settings: The model's settings.
            request: What to ask.

        Returns:
            The keyword arguments (``extra_body`` holds what the SDK no
            longer types).
        """
        params: dict[str, Any] = {
            "model": settings.model_id,
            "max_tokens": request.max_tokens or settings.default_max_tokens,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.conversation
            ],
        }
        if request.system_prompt:
            params["system"] = request.system_prompt
        if request.temperature is not None and settings.accepts_temperature:
            params["extra_body"] = {"temperature": request.temperature}
        return params

    async def call(
        self,
        client: AsyncAnthropic,
        settings: AnthropicSettings,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> Completion:
        """Make one Messages call."""
        message = await client.messages.create(
            **self.message_params(settings, request)
        )
        return completion_from_message(message, ctx)

    async def call_stream(
        self,
        client: AsyncAnthropic,
        settings: AnthropicSettings,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> AsyncIterator[StreamEvent]:
        """Make one streaming Messages call."""
        parts: list[str] = []
        input_tokens = output_tokens = 0
        stop_reason: str | None = None
        model = message_id = None
        stopped = False
        stream = await client.messages.create(
            **self.message_params(settings, request), stream=True
        )
        async with stream:
            ctx.streaming = True
            async for event in stream:
                if event.type == "message_start":
                    model, message_id = event.message.model, event.message.id
                    input_tokens = _input_tokens(event.message.usage)
                elif event.type == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        parts.append(event.delta.text)
                        yield TextDelta(event.delta.text)
                elif event.type == "message_delta":
                    stop_reason = event.delta.stop_reason
                    output_tokens = event.usage.output_tokens
                    if event.usage.input_tokens is not None:
                        # Cumulative counts, when given, supersede the start.
                        input_tokens = _input_tokens(event.usage)
                elif event.type == "message_stop":
                    stopped = True
        if not stopped:
            raise StreamError(
                f"{ctx.provider}: the stream ended without message_stop"
            )
        yield Completion(
            text="".join(parts),
            finish_reason=normalize_finish_reason(stop_reason, FINISH_ALIASES),
            usage=Usage(input_tokens, output_tokens),
            model=model,
            latency_ms=ctx.elapsed_ms(),
            response_id=message_id,
        )
