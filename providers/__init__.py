"""LLM providers: one async interface, adapters on the vendors' SDKs.

The pipeline resolves a model's key with :func:`resolve_api_key`, looks
its provider up with :func:`get_provider` and calls ``complete`` or
``stream``; every failure is a typed :class:`ProviderError`. Importing
this package imports no vendor SDK: adapters load on first use.
"""

from .base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    LLMProvider,
    StreamEvent,
    TextDelta,
    Usage,
)
from .errors import (
    AuthenticationError,
    ConfigError,
    ContentFilterError,
    MissingDependencyError,
    PermanentError,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    StreamError,
    TransientError,
    UnknownProviderError,
)
from .keys import key_env_var, resolve_api_key
from .registry import ENTRY_POINT_GROUP, get_provider, provider_names

__all__ = [
    "ENTRY_POINT_GROUP",
    "AuthenticationError",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ConfigError",
    "ContentFilterError",
    "LLMProvider",
    "MissingDependencyError",
    "PermanentError",
    "ProviderError",
    "ProviderTimeout",
    "RateLimitError",
    "StreamError",
    "StreamEvent",
    "TextDelta",
    "TransientError",
    "UnknownProviderError",
    "Usage",
    "get_provider",
    "key_env_var",
    "provider_names",
    "resolve_api_key",
]
