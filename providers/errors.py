"""Typed provider errors, raised at the adapter boundary.

Every SDK exception is mapped to one of these in the adapter, so the
pipeline decides retries from the type alone::

    ProviderError                 any failure talking to a provider
    ├── RateLimitError            429 / quota; honour ``retry_after``
    ├── TransientError            worth retrying: 5xx, connection errors
    │   ├── ProviderTimeout       the call exceeded its timeout
    │   └── StreamError           cut stream, error event, no end marker
    ├── PermanentError            other 4xx: retrying cannot help
    │   └── ContentFilterError    refused by the provider's safety filter
    └── AuthenticationError       401 / 403: key missing, wrong or revoked
    ConfigError                   a model config is invalid (names field)
    UnknownProviderError          no provider registered under a name
    MissingDependencyError        the provider's SDK is not installed

All of them cross Ray process boundaries, so each pickles with every
field (``__reduce__`` rebuilds it from its keyword arguments).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ProviderError(Exception):
    """A provider call failed.

    Attributes:
        message: Human-readable description (never contains a key).
        provider: Registry name of the provider, when known.
        model: Model name or deployment the call was for, when known.
        status_code: HTTP status returned by the provider, if any.
        retry_after: Seconds the provider asked us to wait, if it did.
    """

    retryable: ClassVar[bool] = False
    kind: ClassVar[str] = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.retry_after = retry_after

    def _fields(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "status_code": self.status_code,
            "retry_after": self.retry_after,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._fields()))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" for k, v in self._fields().items() if v is not None
        )
        sep = ", " if fields else ""
        return f"{type(self).__name__}({self.message!r}{sep}{fields})"


def _rebuild(
    cls: type[ProviderError], message: str, fields: dict[str, Any]
) -> ProviderError:
    return cls(message, **fields)


class RateLimitError(ProviderError):
    """The provider throttled the call (HTTP 429 or a quota error)."""

    retryable = True
    kind = "rate_limited"


class TransientError(ProviderError):
    """A failure that may succeed on retry (5xx, connection reset)."""

    retryable = True
    kind = "transient"


class ProviderTimeout(TransientError):
    """The call did not finish within its timeout."""

    kind = "timeout"


class StreamError(TransientError):
    """A stream was cut, carried an error event or lacked its end marker."""

    kind = "stream"


class PermanentError(ProviderError):
    """The provider rejected the request; retrying cannot help."""

    kind = "permanent"


class ContentFilterError(PermanentError):
    """The provider's content filter refused the prompt or the answer."""

    kind = "content_filter"


class AuthenticationError(ProviderError):
    """The key is missing, wrong or lacks permission (401/403)."""

    kind = "auth"


class ConfigError(ProviderError):
    """A model's provider config is invalid.

    Attributes:
        field: The offending config field (camelCase, as stored).
    """

    kind = "config"

    def __init__(
        self, message: str, *, field: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.field = field

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "field": self.field}


class UnknownProviderError(LookupError):
    """No provider is registered under the requested name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown provider {name!r}; known providers: "
            + ", ".join(sorted(known))
        )
        self.name = name
        self.known = known

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.known))


class MissingDependencyError(ImportError):
    """A provider's SDK is not installed."""

    def __init__(self, provider: str, package: str) -> None:
        super().__init__(
            f"provider {provider!r} needs the {package!r} package: "
            f"pip install {package}"
        )
        self.provider = provider
        self.package = package

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.provider, self.package))
