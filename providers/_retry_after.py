"""Retry-after hints: how long a provider asked us to wait.

Vendors say it three ways: the standard ``Retry-After`` header (seconds or
an HTTP date), the non-standard ``retry-after-ms`` header (milliseconds,
more precise, so it wins when both are present), and Google's
``google.rpc.RetryInfo`` detail with a ``retryDelay`` such as ``"2.5s"``
inside the JSON error body. :func:`retry_after` weighs them in that order
of precision: ``retry-after-ms``, then ``RetryInfo``, then ``Retry-After``.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)s\s*")


def _header(headers: Any, name: str) -> str | None:
    """Look a header up case-insensitively in any SDK's header object."""
    if headers is None:
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        # Plain dicts (Gemini's HttpResponse) are case-sensitive.
        lowered = name.lower()
        for key, candidate in headers.items():
            if str(key).lower() == lowered:
                return str(candidate)
    return None if value is None else str(value)


def retry_after(
    headers: Any, body: Any = None, *, now: float | None = None
) -> float | None:
    """Read the wait a provider asked for, from headers and error body.

    Args:
        headers: The response headers (any mapping with ``get``), or None.
        body: The decoded JSON error body, for Google's ``RetryInfo``.
        now: The current epoch time, for HTTP dates; the clock by default.

    Returns:
        Seconds to wait (never negative), or None when nothing says.
    """
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    google = retry_after_from_google_details(body)
    if google is not None:
        return google
    return retry_after_from_headers(headers, now=now)


def retry_after_from_headers(
    headers: Any, *, now: float | None = None
) -> float | None:
    """Read the wait a response asked for from its headers.

    Args:
        headers: A header mapping with a ``get`` method (httpx2, aiohttp,
            azure-core and plain dicts all work).
        now: The current epoch time, for HTTP dates; the clock by default.

    Returns:
        Seconds to wait (never negative), or None when no usable header.
    """
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, moment.timestamp() - current)


def retry_after_from_google_details(body: Any) -> float | None:
    """Read ``RetryInfo.retryDelay`` from a Google JSON error body.

    Args:
        body: The decoded error body, ``{"error": {"details": [...]}}``,
            or the ``error`` object itself.

    Returns:
        Seconds to wait, or None when the body carries no retry info.
    """
    if not isinstance(body, Mapping):
        return None
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, Mapping) else None
    if not isinstance(details, Iterable) or isinstance(details, str | bytes):
        return None
    for detail in details:
        if not isinstance(detail, Mapping):
            continue
        if detail.get("@type") != _RETRY_INFO_TYPE:
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str):
            match = _DURATION.fullmatch(delay)
            if match:
                return float(match.group(1))
        if isinstance(delay, Mapping):
            # The proto3 JSON form is a string, but a decoded Duration
            # message ({"seconds": 2, "nanos": 5e8}) also occurs.
            seconds = float(delay.get("seconds", 0) or 0)
            return seconds + float(delay.get("nanos", 0) or 0) / 1e9
    return None
