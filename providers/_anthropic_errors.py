"""Mapping ``anthropic`` SDK exceptions to ours.

Status errors carry the body's ``error.type`` as ``exc.type``. An
``event: error`` inside a 200 stream arrives as a status error with status
200: ``rate_limit_error`` there is a rate limit, anything else (typically
``overloaded_error``) a broken stream. The SDK does not wrap ``httpx2``
failures while a stream is read, so those are mapped here too.
"""

from __future__ import annotations

from ._call import CallContext
from ._http_errors import error_for_status, map_httpx2_error
from .errors import (
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    StreamError,
    TransientError,
)

_AUTH_TYPES = frozenset({"authentication_error", "permission_error"})


def map_anthropic_error(
    exc: Exception, ctx: CallContext
) -> ProviderError | None:
    """Translate an exception raised by the ``anthropic`` SDK.

    Args:
        exc: The exception.
        ctx: The call's context.

    Returns:
        The typed error, or None when ``exc`` is not the SDK's.
    """
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeout(f"{ctx.provider}: the request timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__
        return TransientError(
            f"{ctx.provider}: connection failed"
            + (f": {type(cause).__name__}" if cause else "")
        )
    if isinstance(exc, anthropic.APIStatusError):
        message = exc.api_message or exc.message
        if exc.status_code < 400:
            text = ctx.safe_message(message)
            if exc.type == "rate_limit_error":
                return RateLimitError(
                    f"{ctx.provider}: rate limited mid-stream: {text}",
                    status_code=429,
                )
            return StreamError(
                f"{ctx.provider}: error event in stream ({exc.type}): {text}"
            )
        return error_for_status(
            exc.status_code,
            message,
            ctx,
            headers=exc.response.headers,
            auth=exc.type in _AUTH_TYPES,
        )
    if isinstance(exc, anthropic.APIResponseValidationError):
        return TransientError(
            f"{ctx.provider}: malformed response: {exc.message}",
            status_code=exc.status_code,
        )
    return map_httpx2_error(exc, ctx)
