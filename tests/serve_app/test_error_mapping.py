"""The one place errors become responses, checked on a small app."""

import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError
from starlette.testclient import TestClient

from pipeline.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    ValidationFailed,
)
from serve_app.errors import field_path, install_error_handlers
from serve_app.middleware import (
    BodySizeLimitMiddleware,
    RequestContextMiddleware,
)

RAISED = {
    "validation": ValidationFailed(
        "bad", [{"field": "items[2].model", "message": "unknown"}]
    ),
    "unauthorized": Unauthorized("who"),
    "not-found": NotFound("job", "x"),
    "conflict": Conflict("busy"),
    "transition": InvalidTransition("job", "PROCESSED", "CANCELED"),
    "too-large": PayloadTooLarge("big"),
    "quota": QuotaExceeded("slow", retry_after=2.4),
    "database": DatabaseUnavailable("down"),
    "driver": ServerSelectionTimeoutError("no servers"),
    # Cosmos DB's reply to a request over the provisioned throughput.
    "throttled": OperationFailure(
        "Error=16500, RetryAfterMs=1500, Details='TooManyRequests (429)'",
        code=16500,
        details={
            "ok": 0.0,
            "errmsg": "Error=16500, RetryAfterMs=1500, Details='...'",
            "code": 16500,
            "codeName": "RequestRateTooLarge",
        },
    ),
    "server-error": OperationFailure("bad", code=2, details={"ok": 0.0}),
    "bug": RuntimeError("secret internals"),
}


class Body(BaseModel):
    count: int


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise RAISED[name]

    @app.post("/echo")
    async def echo(body: Body) -> Body:
        return body

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=100)
    app.add_middleware(RequestContextMiddleware)
    return app


@pytest.fixture(scope="module")
def client():
    with TestClient(_app(), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("validation", 400, "validation_failed"),
        ("unauthorized", 401, "unauthorized"),
        ("not-found", 404, "not_found"),
        ("conflict", 409, "conflict"),
        ("transition", 409, "invalid_transition"),
        ("too-large", 413, "payload_too_large"),
        ("quota", 429, "quota_exceeded"),
        ("database", 503, "database_unavailable"),
        ("driver", 503, "database_unavailable"),
        ("throttled", 503, "database_unavailable"),
        ("server-error", 500, "internal_error"),
        ("bug", 500, "internal_error"),
    ],
)
def test_each_error_maps_to_its_status(client, name, status, code):
    response = client.get(f"/raise/{name}")
    assert response.status_code == status
    body = response.json()
    assert body["error"]["code"] == code
    assert body["requestId"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    assert "secret internals" not in response.text


def test_details_travel_with_the_error(client):
    body = client.get("/raise/transition").json()["error"]
    assert body["currentStatus"] == "PROCESSED"
    body = client.get("/raise/validation").json()["error"]
    assert body["errors"] == [
        {"field": "items[2].model", "message": "unknown"}
    ]
    response = client.get("/raise/quota")
    assert response.headers["Retry-After"] == "2"
    # The database's own wait (1.5 s), rounded.
    response = client.get("/raise/throttled")
    assert response.headers["Retry-After"] == "2"


def test_request_validation_is_400_naming_fields(client):
    response = client.post("/echo", json={"count": "many"})
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["field"] == "count"


def test_body_limit(client):
    assert client.post("/echo", json={"count": 1}).status_code == 200
    response = client.post("/echo", content=b'{"count": 1' + b" " * 200 + b"}")
    assert response.status_code == 413

    def chunks():
        yield b'{"count":'
        yield b" " * 200
        yield b"1}"

    response = client.post(
        "/echo", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_field_paths():
    assert field_path(("body", "items", 3, "model")) == "items[3].model"
    assert field_path(("query", "limit")) == "limit"
    assert field_path(("body",)) == "body"
