"""Mapping ``azure-core`` exceptions (Azure AI Inference) to ours.

azure-core raises :class:`~azure.core.exceptions.HttpResponseError` (and
subclasses such as ``ClientAuthenticationError``) with the parsed OData
``error`` object; Azure reports a content-filter refusal as a 400 whose
``error.code`` is ``content_filter``. Transport failures are
``ServiceRequestError``/``ServiceResponseError`` (their ``Timeout``
subclasses for timeouts) and a body cut short is ``IncompleteReadError``.
"""

from __future__ import annotations

from ._call import CallContext
from ._http_errors import error_for_status
from .errors import ProviderError, ProviderTimeout, TransientError

_CONTENT_FILTER_CODES = frozenset(
    {"content_filter", "contentfilter", "responsibleaipolicyviolation"}
)


def map_azure_error(exc: Exception, ctx: CallContext) -> ProviderError | None:
    """Translate an exception raised by ``azure-core``.

    Args:
        exc: The exception.
        ctx: The call's context.

    Returns:
        The typed error, or None when ``exc`` is not azure-core's.
    """
    from azure.core import exceptions as az

    if isinstance(
        exc, az.ServiceRequestTimeoutError | az.ServiceResponseTimeoutError
    ):
        return ProviderTimeout(f"{ctx.provider}: the request timed out")
    if isinstance(exc, az.IncompleteReadError):
        return TransientError(f"{ctx.provider}: the body was cut short")
    if isinstance(exc, az.HttpResponseError) and exc.status_code:
        error = exc.error
        code = str(error.code or "").lower() if error else ""
        inner = getattr(error, "innererror", None) if error else None
        inner_code = (
            str(inner.get("code", "")).lower()
            if isinstance(inner, dict)
            else ""
        )
        return error_for_status(
            exc.status_code,
            error.message if error and error.message else exc.message,
            ctx,
            headers=getattr(exc.response, "headers", None),
            content_filter=bool({code, inner_code} & _CONTENT_FILTER_CODES),
        )
    if isinstance(exc, az.ServiceRequestError | az.ServiceResponseError):
        return TransientError(
            f"{ctx.provider}: connection failed: {type(exc).__name__}"
        )
    if isinstance(exc, az.AzureError):
        return TransientError(
            f"{ctx.provider}: {type(exc).__name__}: "
            + ctx.safe_message(exc.message)
        )
    return None
