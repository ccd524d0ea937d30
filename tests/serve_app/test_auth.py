import pytest

from tests.support.api import register_client

pytestmark = pytest.mark.ray


def test_admin_endpoints_need_the_admin_key(http):
    assert http.get("/admin/clients").status_code == 401
    response = http.get("/admin/clients", headers={"X-Admin-Key": "wrong"})
    assert response.status_code == 401
    body = response.json()
    assert body["error"]["code"] == "unauthorized"
    assert body["requestId"]


def test_client_endpoints_need_credentials(http, client_a):
    assert http.get("/prompts").status_code == 401
    wrong = {"X-Client-Id": client_a.client_id, "X-Client-Key": "msk_x"}
    assert http.get("/prompts", headers=wrong).status_code == 401
    bad_bearer = {"Authorization": "Bearer " + client_a.api_key + "x"}
    assert http.get("/prompts", headers=bad_bearer).status_code == 401
    only_id = {"X-Client-Id": client_a.client_id}
    assert http.get("/prompts", headers=only_id).status_code == 401
    garbage_id = {"X-Client-Id": "nope", "X-Client-Key": client_a.api_key}
    assert http.get("/prompts", headers=garbage_id).status_code == 401


def test_both_client_auth_forms_work(http, client_a):
    assert http.get("/prompts", headers=client_a.headers).status_code == 200
    assert http.get("/prompts", headers=client_a.bearer).status_code == 200


def test_a_key_only_works_with_its_own_client_id(http, client_a, client_b):
    mixed = {
        "X-Client-Id": client_b.client_id,
        "X-Client-Key": client_a.api_key,
    }
    assert http.get("/prompts", headers=mixed).status_code == 401


def test_admin_key_is_not_a_client_key(http, admin_headers):
    bearer = {"Authorization": "Bearer " + admin_headers["X-Admin-Key"]}
    assert http.get("/prompts", headers=bearer).status_code == 401


def test_rotation_invalidates_the_old_key(http, admin_headers, client_a):
    response = http.post(
        f"/admin/clients/{client_a.client_id}/rotate-key",
        headers=admin_headers,
    )
    assert response.status_code == 200
    new_key = response.json()["apiKey"]
    assert new_key != client_a.api_key
    assert http.get("/prompts", headers=client_a.bearer).status_code == 401
    new = {"Authorization": f"Bearer {new_key}"}
    assert http.get("/prompts", headers=new).status_code == 200


def test_deactivated_clients_are_refused(http, admin_headers, client_a):
    response = http.delete(
        f"/admin/clients/{client_a.client_id}", headers=admin_headers
    )
    assert response.status_code == 204
    assert http.get("/prompts", headers=client_a.bearer).status_code == 401
    response = http.get(
        f"/admin/clients/{client_a.client_id}", headers=admin_headers
    )
    assert response.status_code == 404


def test_request_rate_quota_gives_429_with_retry_after(http, admin_headers):
    limited = register_client(http, admin_headers, requestsPerMinute=3)
    statuses = [
        http.get("/prompts", headers=limited.bearer).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    response = http.get("/prompts", headers=limited.bearer)
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.json()["error"]["code"] == "quota_exceeded"
