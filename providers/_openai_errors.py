"""Mapping ``openai`` SDK exceptions (OpenAI and Azure OpenAI) to ours.

The SDK hands us the ``error`` object of the JSON body as ``exc.body``;
Azure OpenAI reports a content-filter refusal as a 400 whose code is
``content_filter`` (with ``innererror.code`` ``ResponsibleAIPolicyViolation``)
and OpenAI a blocked prompt as ``content_policy_violation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._call import CallContext
from ._http_errors import error_for_status, map_httpx2_error
from .errors import ProviderError, ProviderTimeout, TransientError

_CONTENT_FILTER_CODES = frozenset(
    {
        "content_filter",
        "content_policy_violation",
        "responsibleaipolicyviolation",
    }
)


def is_content_filter(body: Any) -> bool:
    """Whether an error object says a content filter refused."""
    if not isinstance(body, Mapping):
        return False
    codes = {str(body.get("code", "")).lower()}
    inner = body.get("innererror")
    if isinstance(inner, Mapping):
        codes.add(str(inner.get("code", "")).lower())
    return bool(codes & _CONTENT_FILTER_CODES)


def map_openai_error(exc: Exception, ctx: CallContext) -> ProviderError | None:
    """Translate an exception raised by the ``openai`` SDK.

    Args:
        exc: The exception.
        ctx: The call's context.

    Returns:
        The typed error, or None when ``exc`` is not the SDK's.
    """
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(f"{ctx.provider}: the request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return TransientError(
            f"{ctx.provider}: connection failed"
            + (f": {type(cause).__name__}" if cause else "")
        )
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = (
            body.get("message")
            if isinstance(body, Mapping) and body.get("message")
            else exc.message
        )
        return error_for_status(
            exc.status_code,
            message,
            ctx,
            headers=exc.response.headers,
            content_filter=is_content_filter(body),
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return TransientError(
            f"{ctx.provider}: malformed response: {exc.message}",
            status_code=exc.status_code,
        )
    return map_httpx2_error(exc, ctx)
