"""The plumbing every SDK adapter shares around one call.

:class:`SDKAdapter` does, once for all adapters, what is not about any
vendor: parse and cache the model config, pick the cached SDK client,
check a key is present, bound the call by its deadline, map errors at the
boundary and measure latency. An adapter module only says how to read its
config, build and close its SDK client, map its SDK's exceptions, and turn
a request into the vendor's call (and the answer back).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import AsyncIterator, Hashable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from ._call import CallContext, Deadline, close_iterator, error_boundary
from ._clients import ClientCache
from ._config import CommonSettings
from .base import Completion, CompletionRequest, LLMProvider, StreamEvent
from .errors import AuthenticationError, ProviderError

# What SDKs get as a key when the model needs none (``auth: none``): they
# insist on some value, and this one is plainly not a secret.
PLACEHOLDER_KEY = "no-key-needed"


class AdapterSettings(Hashable, Protocol):
    """What the shared plumbing reads from an adapter's parsed config."""

    @property
    def common(self) -> CommonSettings:
        """The fields every provider shares."""
        ...

    @property
    def model_label(self) -> str | None:
        """The upstream model or deployment, for error messages."""
        ...


S = TypeVar("S", bound=AdapterSettings)
C = TypeVar("C")


class SDKAdapter(LLMProvider, Generic[S, C]):
    """Base class of the adapters built on a vendor SDK.

    Subclasses implement :meth:`parse_settings`, :meth:`build_client`,
    :meth:`close_client`, :meth:`map_error`, :meth:`call` and
    :meth:`call_stream`.
    """

    def __init__(self) -> None:
        self._clients: ClientCache[S, C] = ClientCache(
            self.build_client, self.close_client
        )
        self._settings: dict[str, S] = {}

    # -- what each adapter provides ---------------------------------------

    @abstractmethod
    def parse_settings(self, config: Mapping[str, Any]) -> S:
        """Read a model config into the adapter's typed settings.

        Args:
            config: The model's provider config.

        Returns:
            Hashable settings (they key the client cache).

        Raises:
            ConfigError: Naming the first offending field.
        """

    @abstractmethod
    def build_client(self, settings: S, api_key: str | None) -> C:
        """Make an SDK client with the SDK's own retries switched off."""

    @abstractmethod
    async def close_client(self, client: C) -> None:
        """Release an SDK client's connections."""

    @abstractmethod
    def map_error(
        self, exc: Exception, ctx: CallContext
    ) -> ProviderError | None:
        """Translate an SDK exception, or return None if it is not one."""

    @abstractmethod
    async def call(
        self,
        client: C,
        settings: S,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> Completion:
        """Make one non-streaming call and build the completion."""

    @abstractmethod
    def call_stream(
        self,
        client: C,
        settings: S,
        request: CompletionRequest,
        ctx: CallContext,
    ) -> AsyncIterator[StreamEvent]:
        """Make one streaming call: deltas, then the completion.

        Implementations set ``ctx.streaming`` once the response started
        and raise :class:`~providers.errors.StreamError` when the stream
        ends without the vendor's end marker.
        """

    # -- the shared plumbing ----------------------------------------------

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a model's provider config.

        Args:
            config: The model's ``config`` mapping (camelCase keys).

        Raises:
            ConfigError: Naming the first offending field.
        """
        self.parse_settings(config)

    def _settings_for(self, config: Mapping[str, Any]) -> S:
        fingerprint = json.dumps(config, sort_keys=True, default=str)
        settings = self._settings.get(fingerprint)
        if settings is None:
            settings = self._settings[fingerprint] = self.parse_settings(
                config
            )
        return settings

    def _start(
        self, config: Mapping[str, Any], api_key: str | None
    ) -> tuple[S, str | None, CallContext, Deadline]:
        settings = self._settings_for(config)
        ctx = CallContext(self.name, settings.model_label, api_key)
        if settings.common.auth == "none":
            api_key = api_key or PLACEHOLDER_KEY
        elif not api_key:
            raise AuthenticationError(
                f"{self.name}: no API key was given for a model with "
                "auth 'key'",
                provider=self.name,
                model=settings.model_label,
            )
        deadline = Deadline(settings.common.timeout_seconds)
        return settings, api_key, ctx, deadline

    async def complete(
        self,
        config: Mapping[str, Any],
        request: CompletionRequest,
        api_key: str | None,
    ) -> Completion:
        """Run one call and return the whole answer.

        Args:
            config: The model's provider config.
            request: What to ask.
            api_key: The model's key, or None where none is needed.

        Returns:
            The completion, usage included.

        Raises:
            ProviderError: A subclass saying what went wrong.
        """
        settings, api_key, ctx, deadline = self._start(config, api_key)
        with error_boundary(ctx, self.map_error):
            client = self._clients.get(settings, api_key)
            async with deadline.scope():
                return await self.call(client, settings, request, ctx)

    async def stream(
        self,
        config: Mapping[str, Any],
        request: CompletionRequest,
        api_key: str | None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream one call: text deltas, then the final completion.

        Close the iterator (``aclose``) when abandoning it early, so its
        connection goes back to the pool at once.

        Args:
            config: The model's provider config.
            request: What to ask.
            api_key: The model's key, or None where none is needed.

        Yields:
            :class:`~providers.base.TextDelta` items, then exactly one
            :class:`~providers.base.Completion` (usage included).

        Raises:
            ProviderError: A subclass saying what went wrong.
        """
        settings, api_key, ctx, deadline = self._start(config, api_key)
        with error_boundary(ctx, self.map_error):
            client = self._clients.get(settings, api_key)
            events = self.call_stream(client, settings, request, ctx)
            try:
                while True:
                    async with deadline.scope():
                        try:
                            event = await anext(events)
                        except StopAsyncIteration:
                            break
                    yield event
            finally:
                await close_iterator(events)

    async def aclose(self) -> None:
        """Close the SDK clients of the running event loop."""
        await self._clients.aclose()
