"""One place that turns errors into HTTP responses.

Domain errors carry their status; request validation becomes a 400 that
names each offending field; a database outage is a 503; anything else
is a 500 whose body says nothing about the code (the log has the trace;
see :class:`serve_app.middleware.RequestContextMiddleware`).
Every error body has the same shape::

    {"error": {"code": ..., "message": ..., ...details}, "requestId": ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, OperationFailure
from starlette.exceptions import HTTPException
from starlette.routing import Match

from pipeline.errors import DatabaseUnavailable, MetasyncError
from pipeline.logging import get_logger
from pipeline.store.retry import throttle_delay_s

log = get_logger(__name__)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON body every error shares."""
    body = {
        "error": {"code": code, "message": message, **(details or {})},
        "requestId": getattr(request.state, "request_id", None),
    }
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(location: Sequence[str | int]) -> str:
    """``("body", "items", 3, "model")`` -> ``items[3].model``."""
    path = ""
    for part in location:
        if part in ("body", "query", "path", "header") and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


async def _domain(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, MetasyncError)
    headers = {}
    details = dict(error.details)
    if "retryAfter" in details:
        headers["Retry-After"] = str(max(1, round(details["retryAfter"])))
    if "challenge" in details:
        headers["WWW-Authenticate"] = details.pop("challenge")
    if error.status_code >= 500:
        log.warning("request_failed", code=error.code, error=error.message)
    return error_response(
        request,
        error.status_code,
        error.code,
        error.message,
        details,
        headers,
    )


async def _validation(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = [
        {"field": field_path(e["loc"]), "message": e["msg"]}
        for e in error.errors()
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return error_response(
        request, 400, "validation_failed", summary, {"errors": errors}
    )


async def _http(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    headers = dict(error.headers or {})
    if error.status_code == 405:
        # Starlette names only the methods of the first route with this
        # path; a path is often served by several (GET and POST /jobs).
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(
        request,
        error.status_code,
        "http_error",
        str(error.detail),
        headers=headers,
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method that some route serves at the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _database(request: Request, error: Exception) -> JSONResponse:
    return await _domain(
        request, DatabaseUnavailable("the database is unavailable")
    )


async def _server_refused(request: Request, error: Exception) -> JSONResponse:
    """A throttled database (Cosmos DB) is a 503 with its own wait."""
    delay = throttle_delay_s(error)
    if delay is None:
        raise error  # any other refusal is a bug: a 500
    return await _domain(
        request,
        DatabaseUnavailable(
            "the database is busy; retry later",
            details={"retryAfter": delay},
        ),
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(MetasyncError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ConnectionFailure, _database)
    app.add_exception_handler(OperationFailure, _server_refused)
    # Anything else is answered by RequestContextMiddleware: a 500 with
    # the request id and no trace.
