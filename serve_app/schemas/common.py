"""Shared schema bases: camelCase aliases and strict request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

#: The largest offset or cursor a query takes: past it the database
#: cannot count (a skip beyond 64 bits was a 500), and no page is there.
MAX_OFFSET = 2**31 - 1


class ApiModel(BaseModel):
    """A response body: snake_case in Python, camelCase in JSON."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
    )


class RequestModel(ApiModel):
    """A request body: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


#: The ``cursor`` query parameter of a keyset listing: the previous
#: page's ``nextCursor`` (opaque; its format is declared so that a
#: request the schema allows is never refused), absent for the first page.
Cursor = Annotated[
    str | None,
    Query(
        pattern="^[0-9a-f]{24}$",
        description="The previous page's `nextCursor`; omit for the first.",
    ),
]


def metadata_times(document: dict[str, Any]) -> dict[str, datetime | None]:
    """``createdAt``/``updatedAt`` of a stored document."""
    metadata = document.get("_metadata") or {}
    return {
        "created_at": metadata.get("createdAt"),
        "updated_at": metadata.get("updatedAt"),
    }


class ErrorInfo(BaseModel):
    """What went wrong: a code, a message and details that vary by error.

    Details: ``errors`` (``[{field, message}]``) on a 400,
    ``currentStatus``/``targetStatus`` on an illegal transition,
    ``retryAfter`` on a 429, ``limitBytes`` on a 413.
    """

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ErrorBody(ApiModel):
    """The body every error response shares."""

    error: ErrorInfo
    request_id: str | None


_ERROR_DESCRIPTIONS = {
    400: "Invalid input; `error.errors` names each offending field.",
    401: "Missing or invalid credentials.",
    404: "No such resource (another client's resource is a 404 too).",
    409: "Not allowed in the resource's current state.",
    413: "The body is over MAX_REQUEST_BYTES (or the batch over its limit).",
    429: "Over a quota or a rate limit; retry after `Retry-After` seconds.",
    502: "The model provider failed the call.",
    503: "The database (or another dependency) is unavailable.",
    504: "The model provider did not answer in time.",
}


def error_responses(
    *statuses: int, by_reference: bool = False
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries declaring these errors with the shared body.

    Args:
        statuses: HTTP statuses the route (or router) can answer with.
        by_reference: Name the body's schema as JSON explicitly, for a
            route whose own response class is not JSON (FastAPI files a
            ``model`` under the route's media type: an HTML route's
            errors would read as HTML).

    Returns:
        The OpenAPI response entries, for FastAPI's ``responses=``.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": _ERROR_DESCRIPTIONS[status]}
        if by_reference:
            entry["content"] = {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorBody"}
                }
            }
        else:
            entry["model"] = ErrorBody
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
        responses[status] = entry
    return responses
