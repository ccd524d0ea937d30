"""Mapping ``google-genai`` exceptions to ours.

The SDK raises :class:`google.genai.errors.APIError` (``ClientError`` for
4xx, ``ServerError`` for 5xx) with the Google RPC status body as
``details``, also for an ``error`` object found inside a stream. A bad key
is a 400 whose ``ErrorInfo.reason`` is ``API_KEY_INVALID``; a rate limit
carries a ``RetryInfo.retryDelay``. The SDK's default transport is
``aiohttp``, whose failures are mapped here as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._call import CallContext
from ._http_errors import error_for_status, map_httpx2_error
from .errors import ProviderError, TransientError

_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
_AUTH_STATUSES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


def _is_auth_failure(status: Any, body: Any) -> bool:
    if status in _AUTH_STATUSES:
        return True
    error = body.get("error", body) if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    return any(
        isinstance(d, Mapping) and d.get("reason") in _AUTH_REASONS
        for d in details or ()
    )


def map_gemini_error(exc: Exception, ctx: CallContext) -> ProviderError | None:
    """Translate an exception raised by the ``google-genai`` SDK.

    Args:
        exc: The exception.
        ctx: The call's context.

    Returns:
        The typed error, or None when ``exc`` is not the SDK's.
    """
    import aiohttp
    from google.genai import errors

    if isinstance(exc, errors.ContinuationInterruptedError):
        cause = exc.__cause__
        if isinstance(cause, Exception):
            return map_gemini_error(cause, ctx)
        return TransientError(f"{ctx.provider}: continuation interrupted")
    if isinstance(exc, errors.APIError):
        return error_for_status(
            int(exc.code or 500),
            exc.message or exc.status or exc,
            ctx,
            headers=getattr(exc.response, "headers", None),
            auth=_is_auth_failure(exc.status, exc.details),
            body=exc.details,
        )
    if isinstance(exc, errors.UnknownApiResponseError):
        return TransientError(f"{ctx.provider}: malformed response")
    if isinstance(exc, aiohttp.ClientError):
        return TransientError(
            f"{ctx.provider}: connection failed: {type(exc).__name__}"
        )
    return map_httpx2_error(exc, ctx)
