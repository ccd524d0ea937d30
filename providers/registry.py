"""The provider registry: names to adapters, built in or from plugins.

Built-in providers are imported lazily, on first use, so a process that
never calls Gemini never imports ``google-genai`` (and a missing SDK fails
only when its provider is asked for, naming the package to install).
Third-party providers register an :class:`~providers.base.LLMProvider`
subclass under the entry-point group ``metasync.providers``::

    [project.entry-points."metasync.providers"]
    mistral = "metasync_mistral:MistralProvider"

A built-in name wins over a plugin of the same name. Each process gets one
instance per provider, whose SDK clients are reused across calls.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from .base import LLMProvider
from .errors import MissingDependencyError, UnknownProviderError

ENTRY_POINT_GROUP = "metasync.providers"


@dataclass(frozen=True, slots=True)
class BuiltinProvider:
    """Where a built-in provider lives and what it needs.

    Attributes:
        module: The adapter module.
        attribute: The adapter class in it.
        package: The pip package of its SDK.
        sdk_module: The SDK's import name, to recognise it missing.
    """

    module: str
    attribute: str
    package: str
    sdk_module: str


BUILTIN_PROVIDERS: dict[str, BuiltinProvider] = {
    "openai": BuiltinProvider(
        "providers.openai", "OpenAIProvider", "openai", "openai"
    ),
    "azure_openai": BuiltinProvider(
        "providers.azure_openai", "AzureOpenAIProvider", "openai", "openai"
    ),
    "azure_inference": BuiltinProvider(
        "providers.azure_inference",
        "AzureInferenceProvider",
        "azure-ai-inference",
        "azure.ai.inference",
    ),
    "anthropic": BuiltinProvider(
        "providers.anthropic", "AnthropicProvider", "anthropic", "anthropic"
    ),
    "gemini": BuiltinProvider(
        "providers.gemini", "GeminiProvider", "google-genai", "google.genai"
    ),
}

_instances: dict[str, LLMProvider] = {}
_lock = threading.Lock()


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def provider_names() -> list[str]:
    """List every provider name, built in or installed as a plugin.

    Returns:
        The names, sorted.
    """
    return sorted(set(BUILTIN_PROVIDERS) | set(_plugins()))


def _is_missing(error: ModuleNotFoundError, sdk_module: str) -> bool:
    """Whether an import failed because (part of) the SDK is absent."""
    name = error.name or ""
    return bool(name) and (
        sdk_module == name
        or sdk_module.startswith(name + ".")
        or name.startswith(sdk_module + ".")
    )


def _load_builtin(name: str, entry: BuiltinProvider) -> type[LLMProvider]:
    try:
        importlib.import_module(entry.sdk_module)
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if _is_missing(exc, entry.sdk_module):
            raise MissingDependencyError(name, entry.package) from exc
        raise
    provider_class: type[LLMProvider] = getattr(module, entry.attribute)
    return provider_class


def _load_plugin(name: str, entry_point: EntryPoint) -> type[LLMProvider]:
    loaded = entry_point.load()
    if not (isinstance(loaded, type) and issubclass(loaded, LLMProvider)):
        raise TypeError(
            f"entry point {name!r} ({entry_point.value}) is not an "
            "LLMProvider subclass"
        )
    return loaded


def provider_class(name: str) -> type[LLMProvider]:
    """Find the class of a provider without instantiating it.

    Args:
        name: The registry name.

    Returns:
        The :class:`~providers.base.LLMProvider` subclass.

    Raises:
        UnknownProviderError: No provider has that name (lists the known).
        MissingDependencyError: Its SDK is not installed (names the
            package).
        TypeError: A plugin's entry point is not an LLMProvider subclass.
    """
    builtin = BUILTIN_PROVIDERS.get(name)
    if builtin is not None:
        return _load_builtin(name, builtin)
    plugins = _plugins()
    if name in plugins:
        return _load_plugin(name, plugins[name])
    raise UnknownProviderError(name, provider_names())


def get_provider(name: str) -> LLMProvider:
    """Return this process's instance of a provider, creating it once.

    Args:
        name: The registry name (``openai``, ``azure_openai``,
            ``azure_inference``, ``anthropic``, ``gemini`` or a plugin's).

    Returns:
        The provider.

    Raises:
        UnknownProviderError: No provider has that name (lists the known).
        MissingDependencyError: Its SDK is not installed (names the
            package).
    """
    instance = _instances.get(name)
    if instance is not None:
        return instance
    with _lock:
        instance = _instances.get(name)
        if instance is None:
            instance = _instances[name] = provider_class(name)()
        return instance
