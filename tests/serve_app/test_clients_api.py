import pytest

pytestmark = pytest.mark.ray


def test_create_shows_the_key_once(http, admin_headers):
    response = http.post(
        "/admin/clients",
        json={"name": "acme", "quotas": {"maxPendingItems": 1000}},
        headers=admin_headers,
    )
    assert response.status_code == 201
    created = response.json()
    assert created["apiKey"].startswith(f"msk_{created['keyPrefix']}_")
    assert created["quotas"]["maxPendingItems"] == 1000
    assert created["active"] is True

    fetched = http.get(
        f"/admin/clients/{created['clientId']}", headers=admin_headers
    ).json()
    assert "apiKey" not in fetched and "keyHash" not in fetched
    assert fetched["name"] == "acme"

    listed = http.get("/admin/clients", headers=admin_headers).json()
    ids = [c["clientId"] for c in listed["items"]]
    assert created["clientId"] in ids
    assert all(
        "apiKey" not in c and "keyHash" not in c for c in listed["items"]
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x", "extra": 1},
        {"name": "x", "quotas": {"budget": -1}},
    ],
)
def test_bad_bodies_are_400_naming_the_field(http, admin_headers, body):
    before = len(
        http.get("/admin/clients?limit=500", headers=admin_headers).json()[
            "items"
        ]
    )
    response = http.post("/admin/clients", json=body, headers=admin_headers)
    assert response.status_code == 400
    errors = response.json()["error"]["errors"]
    assert errors and all(e["field"] for e in errors)
    after = len(
        http.get("/admin/clients?limit=500", headers=admin_headers).json()[
            "items"
        ]
    )
    assert after == before


def test_unknown_clients_are_404(http, admin_headers):
    for path in [
        "/admin/clients/0123456789abcdef01234567",
        "/admin/clients/junk",
    ]:
        assert http.get(path, headers=admin_headers).status_code == 404
        assert http.delete(path, headers=admin_headers).status_code == 404
        assert (
            http.post(path + "/rotate-key", headers=admin_headers).status_code
            == 404
        )
