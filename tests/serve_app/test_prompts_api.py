import pytest

pytestmark = pytest.mark.ray

PROMPT = {
    "name": "greeter",
    "systemPrompt": "You greet people.",
    "userTemplate": "Say hello to {{name}} from {{ city }}.",
    "tags": ["demo"],
}


def _create(http, client, body=PROMPT):
    response = http.post("/prompts", json=body, headers=client.headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_read_list(http, client_a):
    created = _create(http, client_a)
    assert created["version"] == 1
    assert created["variables"] == ["name", "city"]
    assert created["tags"] == ["demo"]
    fetched = http.get(
        f"/prompts/{created['id']}", headers=client_a.headers
    ).json()
    assert fetched == created
    listed = http.get("/prompts", headers=client_a.headers).json()["items"]
    assert [p["id"] for p in listed] == [created["id"]]


def test_update_makes_a_new_version_and_keeps_the_old(http, client_a):
    created = _create(http, client_a)
    changed = {
        **PROMPT,
        "systemPrompt": "You greet people warmly.",
        "userTemplate": "Hi {{who}}",
    }
    response = http.put(
        f"/prompts/{created['id']}", json=changed, headers=client_a.headers
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["version"] == 2
    assert updated["variables"] == ["who"]
    latest = http.get(
        f"/prompts/{created['id']}", headers=client_a.headers
    ).json()
    assert latest["systemPrompt"] == "You greet people warmly."
    v1 = http.get(
        f"/prompts/{created['id']}/versions/1", headers=client_a.headers
    ).json()
    assert v1["systemPrompt"] == PROMPT["systemPrompt"]
    assert v1["version"] == 1 and v1["id"] == created["id"]
    v2 = http.get(
        f"/prompts/{created['id']}/versions/2", headers=client_a.headers
    ).json()
    assert v2["userTemplate"] == "Hi {{who}}"
    missing = http.get(
        f"/prompts/{created['id']}/versions/3", headers=client_a.headers
    )
    assert missing.status_code == 404


def test_delete_is_soft_and_hides_the_prompt(http, client_a):
    created = _create(http, client_a)
    assert (
        http.delete(
            f"/prompts/{created['id']}", headers=client_a.headers
        ).status_code
        == 204
    )
    assert (
        http.get(
            f"/prompts/{created['id']}", headers=client_a.headers
        ).status_code
        == 404
    )
    assert (
        http.delete(
            f"/prompts/{created['id']}", headers=client_a.headers
        ).status_code
        == 404
    )
    ids = [
        p["id"]
        for p in http.get("/prompts", headers=client_a.headers).json()["items"]
    ]
    assert created["id"] not in ids


def test_another_clients_prompt_is_404(http, client_a, client_b):
    created = _create(http, client_a)
    pid = created["id"]
    for method, path in [
        ("GET", f"/prompts/{pid}"),
        ("PUT", f"/prompts/{pid}"),
        ("DELETE", f"/prompts/{pid}"),
        ("GET", f"/prompts/{pid}/versions/1"),
    ]:
        response = http.request(
            method,
            path,
            headers=client_b.headers,
            json=PROMPT if method == "PUT" else None,
        )
        assert response.status_code == 404, (method, path)
    assert http.get("/prompts", headers=client_b.headers).json()["items"] == []
    still = http.get(f"/prompts/{pid}", headers=client_a.headers).json()
    assert still["version"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"systemPrompt": "x"}, "name"),
        ({"name": "x"}, "systemPrompt"),
        ({"name": "x", "systemPrompt": 5}, "systemPrompt"),
        ({"name": "x", "systemPrompt": "s", "tags": "notalist"}, "tags"),
        ({"name": "x", "systemPrompt": "s", "surprise": 1}, "surprise"),
    ],
)
def test_bad_prompt_bodies_name_the_field_and_write_nothing(
    http, client_a, body, field
):
    response = http.post("/prompts", json=body, headers=client_a.headers)
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["error"]["errors"]]
    assert http.get("/prompts", headers=client_a.headers).json()["items"] == []


@pytest.mark.parametrize("version", ["0", str(2**68)])
def test_bad_version_number_is_400(http, client_a, version):
    # 2**68: past the database's 64-bit integers (it was a 500).
    created = _create(http, client_a)
    response = http.get(
        f"/prompts/{created['id']}/versions/{version}",
        headers=client_a.headers,
    )
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["field"] == "version"


def test_a_job_item_past_the_databases_integers_is_400(http, client_a):
    # A promptVersion past 64 bits reached the database (it was a 500).
    created = _create(http, client_a)
    item = {"model": "m", "promptId": created["id"], "promptVersion": 2**68}
    response = http.post(
        "/jobs", json={"items": [item]}, headers=client_a.headers
    )
    assert response.status_code == 400
    fields = [e["field"] for e in response.json()["error"]["errors"]]
    assert any(f.endswith("promptVersion") for f in fields), fields
    assert http.get("/jobs", headers=client_a.headers).json()["items"] == []
