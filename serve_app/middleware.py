"""ASGI middleware: request ids, access log lines, body size limit."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.logging import get_logger

log = get_logger("metasync.access")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestContextMiddleware:
    """Give each request an id, bind it to every log line, log the result.

    A well-formed ``X-Request-ID`` from the caller is kept (Ray Serve's
    proxy always sends one and echoes it in the response); otherwise a
    new one is made and returned in the response header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = (
            given
            if given and _VALID_REQUEST_ID.match(given)
            else uuid.uuid4().hex
        )
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()
        echo = request_id != given

        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
            if message["type"] == "http.response.start" and echo:
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as error:
                # Answer here, not in Starlette's outer error middleware,
                # so even a 500 carries the request id; never a trace.
                log.exception(
                    "unhandled_error", error_type=type(error).__name__
                )
                if status_sent:
                    raise
                await send_internal_error(scope, send_with_id)
            finally:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(
                        (time.perf_counter() - started) * 1000, 1
                    ),
                )


async def send_internal_error(scope: Scope, send: Send) -> None:
    """Send the generic 500 body."""
    from starlette.requests import Request

    from serve_app.errors import error_response

    response = error_response(
        Request(scope),
        500,
        "internal_error",
        "internal error; see the server log",
    )
    await response(scope, _no_receive, send)


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with a 413, before parsing them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Once the body is refused, whatever the app answers (FastAPI
            # turns the read error into a 400) is replaced by the 413.
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
        if refused:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        from starlette.requests import Request

        from serve_app.errors import error_response

        response = error_response(
            Request(scope),
            413,
            "payload_too_large",
            f"request body is over the limit of {self.max_bytes} bytes",
            {"limitBytes": self.max_bytes},
        )
        await response(scope, _no_receive, send)


class _TooLarge(Exception):
    """Raised inside the app when the streamed body passes the limit."""


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None
