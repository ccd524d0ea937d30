"""One provider call: its context, its deadline and its error boundary.

Every adapter runs each call inside :func:`error_boundary`, which turns
whatever the SDK raised into one of our typed errors (through the
adapter's mapper) and stamps the provider and model on it. A
:class:`Deadline` bounds the whole call, first byte to last, so a stream
that trickles forever still ends as :class:`~providers.errors.ProviderTimeout`.
Cancellation is never caught: ``CancelledError`` passes through untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import (
    ProviderError,
    ProviderTimeout,
    StreamError,
    TransientError,
)

# Vendor messages are kept for debugging but bounded: some echo the prompt.
_MAX_MESSAGE_CHARS = 500


@dataclass(slots=True)
class CallContext:
    """What an error mapper needs to know about the call that failed.

    Attributes:
        provider: Registry name of the provider.
        model: The upstream model or deployment.
        api_key: The key used, only to redact it from vendor messages.
        streaming: True once a stream's body started; a transport failure
            after that point is a cut stream.
        started: ``time.perf_counter()`` when the call started.
    """

    provider: str
    model: str | None
    api_key: str | None = None
    streaming: bool = False
    started: float = field(default_factory=time.perf_counter)

    def elapsed_ms(self) -> float:
        """Milliseconds since the call started."""
        return (time.perf_counter() - self.started) * 1000.0

    def __repr__(self) -> str:
        # The key must never reach a log line through a repr.
        return (
            f"CallContext(provider={self.provider!r}, model={self.model!r}, "
            f"streaming={self.streaming})"
        )

    def safe_message(self, message: object) -> str:
        """Make a vendor message safe to store and log.

        Args:
            message: The vendor's message or body.

        Returns:
            The text with the key redacted, cut to a bounded length.
        """
        text = str(message)
        if self.api_key and len(self.api_key) >= 8:
            text = text.replace(self.api_key, "***")
        if len(text) > _MAX_MESSAGE_CHARS:
            text = text[:_MAX_MESSAGE_CHARS] + "..."
        return text


ErrorMapper = Callable[[Exception, CallContext], ProviderError | None]


def _stamp(error: ProviderError, ctx: CallContext) -> ProviderError:
    if error.provider is None:
        error.provider = ctx.provider
    if error.model is None:
        error.model = ctx.model
    return error


@contextmanager
def error_boundary(ctx: CallContext, mapper: ErrorMapper) -> Iterator[None]:
    """Translate everything raised inside into a typed provider error.

    Args:
        ctx: The call's context.
        mapper: The adapter's SDK-exception mapper; it returns None for
            exceptions it does not know.

    Yields:
        Nothing; the body runs inside the boundary.

    Raises:
        ProviderError: A subclass for every failure except cancellation.
    """
    try:
        yield
    except ProviderError as exc:
        _stamp(exc, ctx)
        raise
    except TimeoutError as exc:
        raise _stamp(
            ProviderTimeout(f"{ctx.provider}: the call timed out"), ctx
        ) from exc
    except Exception as exc:
        mapped = mapper(exc, ctx)
        if mapped is None:
            mapped = ProviderError(
                ctx.safe_message(
                    f"{ctx.provider}: unexpected {type(exc).__name__}: {exc}"
                )
            )
        elif ctx.streaming and type(mapped) is TransientError:
            mapped = StreamError(
                f"{mapped.message} (mid-stream)",
                status_code=mapped.status_code,
                retry_after=mapped.retry_after,
            )
        raise _stamp(mapped, ctx) from exc


class Deadline:
    """The moment by which a call must be finished.

    Args:
        timeout_seconds: How long the call may take in all.
    """

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._when = asyncio.get_running_loop().time() + timeout_seconds

    def scope(self) -> asyncio.Timeout:
        """Bound the awaits inside by the deadline.

        Never wrap a ``yield`` in it: the cancellation would land in the
        consumer's code instead of the awaited call.

        Returns:
            An ``asyncio.timeout_at`` context raising ``TimeoutError``.
        """
        return asyncio.timeout_at(self._when)


async def close_iterator(iterator: object) -> None:
    """Close an async iterator if it can be closed (async generators can).

    Args:
        iterator: The iterator; SDKs type theirs as plain ``AsyncIterator``.
    """
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def normalize_finish_reason(
    raw: object, aliases: Mapping[str, str] | None = None
) -> str | None:
    """Map a vendor's finish reason onto stop, length or content_filter.

    Args:
        raw: The vendor's value (a string or a string enum), or None.
        aliases: Vendor values (lower case) and what they mean.

    Returns:
        The normalised reason, the vendor's value lowercased when it has
        no alias, or None.
    """
    if raw is None:
        return None
    value = str(getattr(raw, "value", raw)).lower()
    return (aliases or {}).get(value, value)
