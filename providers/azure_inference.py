"""Azure AI Inference (``azure-ai-inference``): Foundry and serverless models.

Registry name ``azure_inference``. Config fields: ``endpoint`` (required,
e.g. ``https://RESOURCE.services.ai.azure.com/models``), ``modelId`` (the
``model`` sent in the body; needed on multi-model endpoints), ``apiVersion``
(the SDK's default when absent), plus ``timeoutSeconds``, ``auth`` and
``apiKeyEnv``. The key goes in both ``Authorization: Bearer`` and
``api-key``, as the SDK does for every kind of endpoint.

The SDK's stream iterator stops quietly at the end of the body, so the
adapter reads the raw body of the streamed response (captured with
azure-core's ``raw_response_hook``) as OpenAI-style server-sent events and
requires the ``[DONE]`` marker; Azure reports usage in the last chunk.
Microsoft now points Foundry users to the OpenAI v1 endpoint
(``azure_openai`` with ``apiVersion: "v1"``); this adapter stays for the
endpoints that need it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._adapter import SDKAdapter
from ._azure_errors import map_azure_error
from ._call import CallContext, normalize_finish_reason
from ._config import CommonSettings, ConfigReader
from ._openai_wire import StreamAccumulator, drain, stream_chunks, usage_from
from .base import Completion, CompletionRequest, StreamEvent, TextDelta
from .errors import ProviderError, TransientError

if TYPE_CHECKING:
    from azure.ai.inference.aio import ChatCompletionsClient


@dataclass(frozen=True, slots=True)
class AzureInferenceSettings:
    """A model's config for an Azure AI Inference endpoint."""

    common: CommonSettings
    endpoint: str
    model_id: str | None = None
    api_version: str | None = None

    @property
    def model_label(self) -> str:
        """The model id, else the endpoint, for error messages."""
        return self.model_id or self.endpoint


def _messages(request: CompletionRequest) -> list[Any]:
    from azure.ai.inference.models import (
        AssistantMessage,
        SystemMessage,
        UserMessage,
    )

    kinds = {
        "system": SystemMessage,
        "user": UserMessage,
        "assistant": AssistantMessage,
    }
    return [kinds[m.role](content=m.content) for m in request.messages]


class AzureInferenceProvider(
    SDKAdapter[AzureInferenceSettings, "ChatCompletionsClient"]
):
    """Chat completions through ``azure.ai.inference.aio``."""

    name = "azure_inference"

    def parse_settings(
        self, config: Mapping[str, Any]
    ) -> AzureInferenceSettings:
        """Read an ``azure_inference`` model config.

        Args:
            config: The model's provider config.

        Returns:
            The settings.

        Raises:
            ConfigError: Naming the first offending field.
        """
        reader = ConfigReader(
            config, self.name, ("endpoint", "modelId", "apiVersion")
        )
        return AzureInferenceSettings(
            common=reader.common(),
            endpoint=reader.required_url("endpoint"),
            model_id=reader.text("modelId"),
            api_version=reader.text("apiVersion"),
        )

    def build_client(
        self, settings: AzureInferenceSettings, api_key: str | None
    ) -> ChatCompletionsClient:
        """Make a ``ChatCompletionsClient`` with azure-core retries off."""
        from azure.ai.inference.aio import ChatCompletionsClient
        from azure.core.credentials import AzureKeyCredential

        options: dict[str, Any] = {}
        if settings.api_version:
            options["api_version"] = settings.api_version
        timeout = settings.common.timeout_seconds
        return ChatCompletionsClient(
            endpoint=settings.endpoint,
            credential=AzureKeyCredential(api_key or ""),
            retry_total=0,
            connection_timeout=timeout,
            read_timeout=timeout,
            **options,
        )

    async def close_client(self, client: ChatCompletionsClient) -> None:
        """Close the client's transport."""
        await client.close()

    def map_error(
        self, exc: Exception, ctx: CallContext
    ) -> ProviderError | None:
        """Translate an azure-core exception."""
        return map_azure_error(exc, ctx)

    def _options(
        self, settings: AzureInferenceSettings, request: CompletionRequest
    ) -> dict[str, Any]:
        options: dict[str, Any] = {"messages": _messages(request)}
        if settings.model_id:
            options["model"] = settings.model_id
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["max_tokens"] = request.max_tokens
        return options

    async def call(
        self,
        client: ChatCompletionsClient,
        settings: AzureInferenceSettings,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> Completion:
        """Make one chat-completions call."""
        result = await client.complete(**self._options(settings, request))
        if not result.choices:
            raise TransientError(
                f"{ctx.provider}: the response had no choices"
            )
        choice = result.choices[0]
        return Completion(
            text=choice.message.content or "",
            finish_reason=normalize_finish_reason(choice.finish_reason),
            usage=usage_from(result.usage),
            model=result.model,
            latency_ms=ctx.elapsed_ms(),
            response_id=result.id,
        )

    async def call_stream(
        self,
        client: ChatCompletionsClient,
        settings: AzureInferenceSettings,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> AsyncIterator[StreamEvent]:
        """Make one streaming call, reading the raw event stream."""
        responses: list[Any] = []
        sdk_stream = await client.complete(
            stream=True,
            raw_response_hook=lambda pipeline_response: responses.append(
                pipeline_response.http_response
            ),
            **self._options(settings, request),
        )
        accumulator = StreamAccumulator()
        try:
            ctx.streaming = True
            raw = responses[-1].iter_bytes()
            async with aclosing(stream_chunks(raw, ctx)) as chunks:
                async for chunk in chunks:
                    text = accumulator.feed(chunk)
                    if text:
                        yield TextDelta(text)
            await drain(raw)
        finally:
            await sdk_stream.aclose()
        yield accumulator.completion(ctx)
