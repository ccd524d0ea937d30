import json

import pytest

pytestmark = pytest.mark.ray


def test_health_and_ready(http):
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


def test_unknown_route_is_404_in_the_common_shape(http):
    response = http.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "http_error"


def test_malformed_json_is_400(http, client_a):
    response = http.post(
        "/prompts",
        content=b"{not json",
        headers={**client_a.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "Traceback" not in response.text


def test_oversized_body_is_413(http, client_a):
    big = json.dumps({"name": "x", "systemPrompt": "a" * (65 * 2**20)})
    response = http.post(
        "/prompts",
        content=big.encode(),
        headers={**client_a.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_request_ids_are_returned_and_kept(http):
    response = http.get("/health", headers={"X-Request-ID": "my-request-1"})
    assert response.headers["x-request-id"] == "my-request-1"
    assert http.get("/health").headers["x-request-id"]
