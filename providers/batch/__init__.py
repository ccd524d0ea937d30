"""The vendors' batch APIs: half-price calls answered within a day.

:func:`batch_client` gives the :class:`BatchClient` of a provider, or
None for a provider without a batch API (``azure_inference``, plugins),
whose items run live. Clients are built on the live adapters (the same
model config and key) and load their SDK on first use.

================  ===================================  =====================
provider          API                                  limits per batch
================  ===================================  =====================
``openai``        files + ``batches``                  50,000 req, 200 MB
``azure_openai``  files + ``batches`` (global batch)   100,000 req, 200 MB
``anthropic``     ``messages.batches``                 100,000 req, 256 MB
``gemini``        ``batches`` (inline, or a file)      20 MB inline, 2 GB
================  ===================================  =====================
"""

from __future__ import annotations

import importlib
from typing import Any

from .._adapter import SDKAdapter
from ..registry import BUILTIN_PROVIDERS, provider_class
from .base import (
    CUSTOM_ID,
    BatchClient,
    BatchRequest,
    BatchState,
    BatchStatus,
    LineError,
    LineOutcome,
    ListedBatch,
    ProviderBatchRef,
)
from .split import BatchLimits, split_requests

# Provider name -> (module, class) of its batch client.
_CLIENTS = {
    "openai": ("providers.batch.openai", "OpenAIBatchClient"),
    "azure_openai": ("providers.batch.openai", "AzureOpenAIBatchClient"),
    "anthropic": ("providers.batch.anthropic", "AnthropicBatchClient"),
    "gemini": ("providers.batch.gemini", "GeminiBatchClient"),
}

__all__ = [
    "CUSTOM_ID",
    "BatchClient",
    "BatchLimits",
    "BatchRequest",
    "BatchState",
    "BatchStatus",
    "LineError",
    "LineOutcome",
    "ListedBatch",
    "ProviderBatchRef",
    "batch_client",
    "has_batch_api",
    "split_requests",
]


def has_batch_api(provider: str) -> bool:
    """Whether a provider's items can go through a batch API."""
    return provider in _CLIENTS


def batch_client(
    provider: str, limits: BatchLimits | None = None
) -> BatchClient[Any, Any] | None:
    """Build the batch client of a provider.

    Args:
        provider: The registry name.
        limits: Caps per batch; the vendor's when None.

    Returns:
        The client, or None when the provider has no batch API.

    Raises:
        MissingDependencyError: The provider's SDK is not installed.
    """
    where = _CLIENTS.get(provider)
    if where is None or provider not in BUILTIN_PROVIDERS:
        return None
    adapter = provider_class(provider)()
    assert isinstance(adapter, SDKAdapter)
    module, attribute = where
    cls = getattr(importlib.import_module(module), attribute)
    client: BatchClient[Any, Any] = cls(adapter, limits)
    return client
