"""Azure OpenAI: the OpenAI wire adapter with an Azure-built client.

Two ways to reach a model (registry name ``azure_openai``):

* Deployments: ``endpoint`` (``https://RESOURCE.openai.azure.com``),
  ``deployment`` and a dated ``apiVersion`` (e.g. ``2024-10-21``); calls
  go to ``/openai/deployments/{deployment}/chat/completions`` through
  ``openai.AsyncAzureOpenAI`` with the key in the ``api-key`` header.
* The Azure AI Foundry v1 endpoint: ``apiVersion: "v1"``, ``endpoint`` and
  ``modelId`` (the deployment name, sent as ``model``; no ``deployment``
  field); calls go to ``{endpoint}/openai/v1/chat/completions`` through a
  plain ``openai.AsyncOpenAI`` client, as Microsoft documents.

Also: ``maxTokensParam``, ``timeoutSeconds``, ``auth``, ``apiKeyEnv``.
Everything on the wire is :class:`~providers.openai.OpenAIChatAdapter`,
over the SDK's aiohttp transport as for ``openai``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._config import CommonSettings, ConfigReader
from .openai import MAX_TOKENS_PARAMS, OpenAIChatAdapter, aiohttp_client

if TYPE_CHECKING:
    from openai import AsyncOpenAI

V1 = "v1"


@dataclass(frozen=True, slots=True)
class AzureOpenAISettings:
    """A model's config for Azure OpenAI.

    Attributes:
        deployment: The deployment (deployments mode), or None for v1.
        model_id: The model sent on the v1 endpoint, or None.
    """

    common: CommonSettings
    endpoint: str
    api_version: str
    deployment: str | None = None
    model_id: str | None = None
    max_tokens_param: str = MAX_TOKENS_PARAMS[0]

    @property
    def v1(self) -> bool:
        """Whether the Foundry v1 endpoint is used."""
        return self.api_version == V1

    @property
    def wire_model(self) -> str:
        """The ``model`` in the body: the deployment either way."""
        return self.model_id or self.deployment or ""

    @property
    def model_label(self) -> str:
        """The deployment, for error messages."""
        return self.wire_model


class AzureOpenAIProvider(OpenAIChatAdapter[AzureOpenAISettings]):
    """Azure OpenAI deployments and the Foundry v1 endpoint."""

    name = "azure_openai"

    def parse_settings(self, config: Mapping[str, Any]) -> AzureOpenAISettings:
        """Read an ``azure_openai`` model config.

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
            (
                "endpoint",
                "deployment",
                "apiVersion",
                "modelId",
                "maxTokensParam",
            ),
        )
        endpoint = reader.required_url("endpoint")
        api_version = reader.required_text("apiVersion")
        if api_version == V1:
            if reader.has("deployment"):
                raise reader.error(
                    "deployment",
                    'not used with apiVersion "v1"; put the deployment '
                    "name in modelId",
                )
            deployment, model_id = None, reader.required_text("modelId")
        else:
            if reader.has("modelId"):
                raise reader.error(
                    "modelId",
                    "not used with deployments (the deployment names the "
                    'model); set apiVersion "v1" for the Foundry endpoint',
                )
            deployment, model_id = reader.required_text("deployment"), None
        return AzureOpenAISettings(
            common=reader.common(),
            endpoint=endpoint,
            api_version=api_version,
            deployment=deployment,
            model_id=model_id,
            max_tokens_param=reader.choice(
                "maxTokensParam", MAX_TOKENS_PARAMS, MAX_TOKENS_PARAMS[0]
            ),
        )

    def build_client(
        self, settings: AzureOpenAISettings, api_key: str | None
    ) -> AsyncOpenAI:
        """Make the Azure (or, for v1, plain) client with retries off."""
        from openai import AsyncAzureOpenAI, AsyncOpenAI

        timeout = settings.common.timeout_seconds
        if settings.v1:
            return AsyncOpenAI(
                api_key=api_key,
                base_url=f"{settings.endpoint}/openai/v1",
                timeout=timeout,
                max_retries=0,
                http_client=aiohttp_client(timeout),
            )
        return AsyncAzureOpenAI(
            api_key=api_key,
            azure_endpoint=settings.endpoint,
            azure_deployment=settings.deployment,
            api_version=settings.api_version,
            timeout=timeout,
            max_retries=0,
            http_client=aiohttp_client(timeout),
        )
