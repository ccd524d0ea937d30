"""Google Gemini API (``google-genai`` SDK).

Registry name ``gemini``. Config fields: ``modelId`` (required),
``baseUrl`` (the SDK's endpoint by default), ``apiVersion`` (the SDK's
default when absent), plus ``timeoutSeconds``, ``auth`` and ``apiKeyEnv``.
The SDK's retries (including its quiet retry of dropped connections) are
switched off with a single-attempt retry policy.

A prompt blocked by the safety filter (``promptFeedback.blockReason``) is
a :class:`~providers.errors.ContentFilterError`; an answer stopped by it
(``finishReason: SAFETY`` and kin) is a completion with finish reason
``content_filter``. In a stream every chunk may carry ``usageMetadata``:
the last one counts, and the stream must end with a chunk that carries a
``finishReason``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._adapter import SDKAdapter
from ._call import CallContext, close_iterator, normalize_finish_reason
from ._config import CommonSettings, ConfigReader
from ._gemini_errors import map_gemini_error
from .base import (
    Completion,
    CompletionRequest,
    StreamEvent,
    TextDelta,
    Usage,
)
from .errors import ContentFilterError, ProviderError, StreamError

if TYPE_CHECKING:
    from google.genai import Client
    from google.genai.types import (
        GenerateContentConfig,
        GenerateContentResponse,
    )

_FILTERED = "content_filter"
FINISH_ALIASES = {
    "stop": "stop",
    "max_tokens": "length",
    "safety": _FILTERED,
    "recitation": _FILTERED,
    "blocklist": _FILTERED,
    "prohibited_content": _FILTERED,
    "spii": _FILTERED,
    "image_safety": _FILTERED,
    "image_prohibited_content": _FILTERED,
}


@dataclass(frozen=True, slots=True)
class GeminiSettings:
    """A model's config for the Gemini API."""

    common: CommonSettings
    model_id: str
    base_url: str | None = None
    api_version: str | None = None

    @property
    def model_label(self) -> str:
        """The model id, for error messages."""
        return self.model_id


def contents_of(request: CompletionRequest) -> list[dict[str, Any]]:
    """The ``contents`` of a request (its non-system messages)."""
    return [
        {
            "role": "model" if m.role == "assistant" else "user",
            "parts": [{"text": m.content}],
        }
        for m in request.conversation
    ]


def _usage(metadata: Any) -> Usage:
    if metadata is None:
        return Usage()
    # Thinking tokens are billed as output.
    output = (metadata.candidates_token_count or 0) + (
        metadata.thoughts_token_count or 0
    )
    return Usage(metadata.prompt_token_count or 0, output)


def _check_blocked(
    response: GenerateContentResponse, ctx: CallContext
) -> None:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        raise ContentFilterError(
            f"{ctx.provider}: the prompt was blocked ({reason})"
        )


def _text(response: GenerateContentResponse) -> tuple[str, Any]:
    """The first candidate's visible text and its finish reason."""
    if not response.candidates:
        return "", None
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content else None
    text = "".join(p.text for p in parts or () if p.text and not p.thought)
    return text, candidate.finish_reason


def completion_from_response(
    response: GenerateContentResponse, ctx: CallContext
) -> Completion:
    """Read a whole response (a call's, or a batch line's).

    Args:
        response: The SDK's response.
        ctx: The call's context (for latency and messages).

    Returns:
        The completion.

    Raises:
        ContentFilterError: The prompt was blocked.
    """
    _check_blocked(response, ctx)
    text, finish = _text(response)
    return Completion(
        text=text,
        finish_reason=normalize_finish_reason(finish, FINISH_ALIASES),
        usage=_usage(response.usage_metadata),
        model=response.model_version,
        latency_ms=ctx.elapsed_ms(),
        response_id=response.response_id,
    )


class GeminiProvider(SDKAdapter[GeminiSettings, "Client"]):
    """Gemini models through ``google.genai.Client(...).aio``."""

    name = "gemini"

    def parse_settings(self, config: Mapping[str, Any]) -> GeminiSettings:
        """Read a ``gemini`` model config.

        Args:
            config: The model's provider config.

        Returns:
            The settings.

        Raises:
            ConfigError: Naming the first offending field.
        """
        reader = ConfigReader(
            config, self.name, ("modelId", "baseUrl", "apiVersion")
        )
        return GeminiSettings(
            common=reader.common(),
            model_id=reader.required_text("modelId"),
            base_url=reader.url("baseUrl"),
            api_version=reader.text("apiVersion"),
        )

    def build_client(
        self, settings: GeminiSettings, api_key: str | None
    ) -> Client:
        """Make a ``genai.Client`` with a single-attempt retry policy."""
        from google import genai
        from google.genai import types

        options = types.HttpOptions(
            base_url=settings.base_url,
            api_version=settings.api_version,
            timeout=int(settings.common.timeout_seconds * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        return genai.Client(
            api_key=api_key, vertexai=False, http_options=options
        )

    async def close_client(self, client: Client) -> None:
        """Close the async transport and the sync one the SDK also made."""
        await client.aio.aclose()
        client.close()

    def map_error(
        self, exc: Exception, ctx: CallContext
    ) -> ProviderError | None:
        """Translate a ``google-genai`` exception."""
        return map_gemini_error(exc, ctx)

    def generation_config(
        self, request: CompletionRequest
    ) -> GenerateContentConfig:
        """The ``config`` of a request: system text and sampling."""
        from google.genai.types import GenerateContentConfig

        config: dict[str, Any] = {}
        if request.system_prompt:
            config["system_instruction"] = request.system_prompt
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.max_tokens is not None:
            config["max_output_tokens"] = request.max_tokens
        return GenerateContentConfig(**config)

    async def call(
        self,
        client: Client,
        settings: GeminiSettings,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> Completion:
        """Make one ``generateContent`` call."""
        response = await client.aio.models.generate_content(
            model=settings.model_id,
            contents=contents_of(request),
            config=self.generation_config(request),
        )
        return completion_from_response(response, ctx)

    async def call_stream(
        self,
        client: Client,
        settings: GeminiSettings,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> AsyncIterator[StreamEvent]:
        """Make one ``streamGenerateContent`` call."""
        parts: list[str] = []
        finish: Any = None
        last: GenerateContentResponse | None = None
        usage_metadata: Any = None
        stream = await client.aio.models.generate_content_stream(
            model=settings.model_id,
            contents=contents_of(request),
            config=self.generation_config(request),
        )
        try:
            async for chunk in stream:
                # The SDK sends the request on the first iteration: only a
                # chunk proves the stream started (an HTTP 503 before it is
                # no broken stream).
                ctx.streaming = True
                _check_blocked(chunk, ctx)
                last = chunk
                usage_metadata = chunk.usage_metadata or usage_metadata
                text, chunk_finish = _text(chunk)
                if text:
                    parts.append(text)
                    yield TextDelta(text)
                finish = chunk_finish or finish
        finally:
            await close_iterator(stream)
        if last is None or finish is None:
            raise StreamError(
                f"{ctx.provider}: the stream ended without a finishReason"
            )
        yield Completion(
            text="".join(parts),
            finish_reason=normalize_finish_reason(finish, FINISH_ALIASES),
            usage=_usage(usage_metadata),
            model=last.model_version,
            latency_ms=ctx.elapsed_ms(),
            response_id=last.response_id,
        )
