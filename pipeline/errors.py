"""Domain errors: what went wrong, typed, with the HTTP status it means.

Services raise these; one exception handler in the app turns them into
responses, so routes never build error responses themselves::

    MetasyncError                      500 (never raised bare)
    ├── ValidationFailed               400  names every offending field
    ├── Unauthorized                   401  credentials missing or wrong
    ├── NotFound                       404  unknown id, or another client's
    ├── Conflict                       409
    │   └── InvalidTransition          409  with the current status
    ├── PayloadTooLarge                413
    ├── QuotaExceeded                  429  with retry_after seconds
    ├── Unavailable                    503
    │   └── DatabaseUnavailable        503  the database cannot be reached
    └── UpstreamError                  502  the model provider failed
        ├── UpstreamRejected           400  it refused the request itself
        ├── UpstreamRateLimited        429  it kept rate limiting
        └── UpstreamTimeout            504  it did not answer in time

Each error pickles with its fields (some cross Ray process boundaries).
"""

from __future__ import annotations

from typing import Any, ClassVar


class MetasyncError(Exception):
    """Base of the domain errors.

    Attributes:
        message: What went wrong, safe to show to the caller.
        details: Structured context (offending fields, ids, status).
    """

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))


def _rebuild(
    cls: type[MetasyncError], message: str, details: dict[str, Any]
) -> MetasyncError:
    error = cls.__new__(cls)
    MetasyncError.__init__(error, message, details=details)
    return error


class ValidationFailed(MetasyncError):
    """The request is invalid; ``details["errors"]`` lists each problem."""

    status_code = 400
    code = "validation_failed"

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, details={"errors": errors})

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Each problem: ``{"field": ..., "message": ..., ...}``."""
        errors: list[dict[str, Any]] = self.details["errors"]
        return errors

    @classmethod
    def single(cls, field: str, message: str) -> ValidationFailed:
        """Build the error for one offending field."""
        return cls(
            f"{field}: {message}", [{"field": field, "message": message}]
        )


class Unauthorized(MetasyncError):
    """Credentials are missing or wrong."""

    status_code = 401
    code = "unauthorized"


class NotFound(MetasyncError):
    """No such resource (or it belongs to someone else)."""

    status_code = 404
    code = "not_found"

    def __init__(self, resource: str, identifier: object) -> None:
        super().__init__(
            f"{resource} {identifier} not found",
            details={"resource": resource, "id": str(identifier)},
        )


class Conflict(MetasyncError):
    """The request conflicts with the resource's current state."""

    status_code = 409
    code = "conflict"


class InvalidTransition(Conflict):
    """A status change the state machine does not allow."""

    code = "invalid_transition"

    def __init__(self, resource: str, current: str, target: str) -> None:
        super().__init__(
            f"{resource} is {current}; it cannot become {target}",
            details={
                "resource": resource,
                "currentStatus": current,
                "targetStatus": target,
            },
        )


class PayloadTooLarge(MetasyncError):
    """The request body or batch is over its limit."""

    status_code = 413
    code = "payload_too_large"


class QuotaExceeded(MetasyncError):
    """The client is over one of its quotas."""

    status_code = 429
    code = "quota_exceeded"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, details={"retryAfter": retry_after})

    @property
    def retry_after(self) -> float:
        """Seconds after which the request may succeed."""
        value: float = self.details["retryAfter"]
        return value


class Unavailable(MetasyncError):
    """A dependency is down; the request may succeed later."""

    status_code = 503
    code = "unavailable"


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached right now."""

    code = "database_unavailable"


class UpstreamError(MetasyncError):
    """The model provider failed the call (after retries)."""

    status_code = 502
    code = "upstream_error"


class UpstreamRejected(UpstreamError):
    """The provider refused the request itself (4xx, content filter)."""

    status_code = 400
    code = "upstream_rejected"


class UpstreamRateLimited(UpstreamError):
    """The provider kept rate limiting the call."""

    status_code = 429
    code = "upstream_rate_limited"


class UpstreamTimeout(UpstreamError):
    """The provider did not answer in time."""

    status_code = 504
    code = "upstream_timeout"
