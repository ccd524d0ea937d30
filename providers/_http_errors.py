"""HTTP-level error classification shared by every SDK's error mapper.

A status code says most of what the pipeline needs: 429 is a rate limit,
401/403 an auth failure, 408/409/5xx (and Anthropic's 529) worth a retry,
any other 4xx permanent. Each mapper adds what only its vendor knows (how
a content filter or a bad key is reported) and hands the rest to
:func:`error_for_status`. Transport failures of the ``httpx2`` client that
the OpenAI and Anthropic SDKs share are mapped by :func:`map_httpx2_error`.
"""

from __future__ import annotations

from typing import Any

from ._call import CallContext
from ._retry_after import retry_after
from .errors import (
    AuthenticationError,
    ContentFilterError,
    PermanentError,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    TransientError,
)

# 408 request timeout and 409 conflict (OpenAI's lock timeouts) are
# transient although they are 4xx.
_TRANSIENT_4XX = frozenset({408, 409})


def error_for_status(
    status: int,
    message: object,
    ctx: CallContext,
    *,
    headers: Any = None,
    content_filter: bool = False,
    auth: bool = False,
    body: Any = None,
) -> ProviderError:
    """Classify an HTTP error response.

    Args:
        status: The HTTP status code.
        message: The vendor's message (redacted and bounded here).
        ctx: The call's context.
        headers: Response headers, for ``Retry-After``.
        content_filter: The vendor said its safety filter refused.
        auth: The vendor said the credentials are bad whatever the status
            (Gemini reports a bad key as 400).
        body: The decoded error body, for waits given there (Google).

    Returns:
        The typed error, not yet raised.
    """
    wait = retry_after(headers, body)
    if auth or status in (401, 403):
        # Vendor auth messages can echo part of the key: keep them out.
        return AuthenticationError(
            f"{ctx.provider}: the credentials were rejected (HTTP {status})",
            status_code=status,
        )
    text = f"{ctx.provider}: HTTP {status}: {ctx.safe_message(message)}"
    if content_filter:
        return ContentFilterError(text, status_code=status)
    if status == 429:
        return RateLimitError(text, status_code=status, retry_after=wait)
    if status >= 500 or status in _TRANSIENT_4XX:
        return TransientError(text, status_code=status, retry_after=wait)
    return PermanentError(text, status_code=status, retry_after=wait)


def map_httpx2_error(exc: Exception, ctx: CallContext) -> ProviderError | None:
    """Map a raw ``httpx2`` transport failure.

    The SDKs wrap these while sending, but not always while a streamed
    body is read, so the adapters see them mid-stream.

    Args:
        exc: The exception.
        ctx: The call's context.

    Returns:
        :class:`ProviderTimeout` or :class:`TransientError`, or None when
        ``exc`` is not an ``httpx2`` transport error.
    """
    import httpx2

    if isinstance(exc, httpx2.TimeoutException):
        return ProviderTimeout(f"{ctx.provider}: timed out: {exc}")
    if isinstance(exc, httpx2.TransportError):
        return TransientError(
            f"{ctx.provider}: connection failed: {type(exc).__name__}: {exc}"
        )
    return None
