import pytest

from tests.support.fake_provider import unique_model

pytestmark = pytest.mark.ray


def _spec(model_name, **changes):
    spec = {
        "name": model_name,
        "provider": "openai",
        "description": "test model",
        "config": {
            "baseUrl": "http://127.0.0.1:9/v1",
            "modelId": "m",
            "auth": "none",
        },
        "limits": {"maxConcurrency": 3, "rpm": 600},
        "pricing": {"inputPerMillion": 1.5, "outputPerMillion": 2},
    }
    spec.update(changes)
    return spec


def test_the_seed_catalog_is_listed_without_endpoints(http, client_a):
    models = {
        m["name"]: m
        for m in http.get("/models", headers=client_a.headers).json()["items"]
    }
    demo = models["demo-openai"]
    assert demo["simulated"] is True and demo["provider"] == "openai"
    assert demo["limits"]["maxConcurrency"] == 32
    assert "baseUrl" not in demo["config"]
    assert demo["config"] == {"modelId": "demo-openai"}


def test_admin_manages_models(http, admin_headers, client_a):
    name = unique_model()
    created = http.post(
        "/admin/models", json=_spec(name), headers=admin_headers
    )
    assert created.status_code == 201
    assert created.json()["config"]["baseUrl"] == "http://127.0.0.1:9/v1"
    duplicate = http.post(
        "/admin/models", json=_spec(name), headers=admin_headers
    )
    assert duplicate.status_code == 409

    changed = http.put(
        f"/admin/models/{name}",
        json=_spec(
            name,
            limits={"maxConcurrency": 7},
            pricing={"inputPerMillion": 2, "batchOutputPerMillion": 0.5},
        ),
        headers=admin_headers,
    )
    assert changed.status_code == 200
    assert changed.json()["pricing"] == {
        "inputPerMillion": 2,
        "outputPerMillion": 0,
        "batchInputPerMillion": None,
        "batchOutputPerMillion": 0.5,
    }
    assert changed.json()["limits"] == {
        "maxConcurrency": 7,
        "rpm": None,
        "tpm": None,
        "maxOutputTokens": None,
    }
    listed = {
        m["name"]
        for m in http.get("/models", headers=client_a.headers).json()["items"]
    }
    assert name in listed

    assert (
        http.delete(f"/admin/models/{name}", headers=admin_headers).status_code
        == 204
    )
    listed = {
        m["name"]
        for m in http.get("/models", headers=client_a.headers).json()["items"]
    }
    assert name not in listed
    assert (
        http.delete(f"/admin/models/{name}", headers=admin_headers).status_code
        == 404
    )
    revived = http.post(
        "/admin/models", json=_spec(name), headers=admin_headers
    )
    assert revived.status_code == 201


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"provider": "nope"}, "provider"),
        (
            {
                "config": {"modelId": "m", "auth": "none"},
                "provider": "azure_openai",
            },
            "config.endpoint",
        ),
        ({"config": {"modelId": "m", "apiKey": "sk-secret"}}, "config.apiKey"),
        ({"limits": {"maxConcurrency": 0}}, "limits.maxConcurrency"),
        ({"name": "bad name!"}, "name"),
        ({"pricing": {"inputPerMillion": -1}}, "pricing.inputPerMillion"),
        ({"fallbacks": ["none-such-model"]}, "fallbacks"),
        ({"fallbacks": ["demo-openai", "demo-openai"]}, "fallbacks"),
        ({"fallbacks": [f"m{i}" for i in range(6)]}, "fallbacks"),
    ],
)
def test_bad_models_are_400_naming_the_field(
    http, admin_headers, changes, field
):
    name = unique_model()
    response = http.post(
        "/admin/models", json=_spec(name, **changes), headers=admin_headers
    )
    assert response.status_code == 400, response.text
    fields = [e["field"] for e in response.json()["error"]["errors"]]
    assert field in fields
    assert "sk-secret" not in response.text
    names = {
        m["name"]
        for m in http.get("/admin/models", headers=admin_headers).json()[
            "items"
        ]
    }
    # The listing works (the seed models are in it): the model is not.
    assert "demo-openai" in names
    assert name not in names


def test_unknown_provider_error_lists_the_known_ones(http, admin_headers):
    response = http.post(
        "/admin/models",
        json=_spec(unique_model(), provider="nope"),
        headers=admin_headers,
    )
    message = response.json()["error"]["errors"][0]["message"]
    for known in (
        "openai",
        "anthropic",
        "gemini",
        "azure_openai",
        "azure_inference",
    ):
        assert known in message


def test_models_cannot_be_renamed(http, admin_headers):
    name = unique_model()
    http.post("/admin/models", json=_spec(name), headers=admin_headers)
    response = http.put(
        f"/admin/models/{name}", json=_spec(name + "x"), headers=admin_headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["field"] == "name"
    assert (
        http.put(
            "/admin/models/none-such",
            json=_spec("none-such"),
            headers=admin_headers,
        ).status_code
        == 404
    )


@pytest.mark.parametrize(
    "variable", ["API_KEY_PEPPER", "DB_CONNECTION_STRING", "ADMIN_API_KEY"]
)
def test_a_model_key_variable_cannot_name_a_service_secret(
    http, admin_headers, variable
):
    config = {**_spec("x")["config"], "auth": "key", "apiKeyEnv": variable}
    name = unique_model()
    response = http.post(
        "/admin/models",
        json=_spec(name, config=config),
        headers=admin_headers,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["errors"][0]["field"] == "config.apiKeyEnv"
    assert variable in error["message"]
    listed = http.get("/admin/models", headers=admin_headers).json()
    assert name not in {m["name"] for m in listed["items"]}
    # A model named so that its conventional variable is a service
    # secret is refused too.
    named = http.post(
        "/admin/models",
        json=_spec(
            "admin-api",
            config={k: v for k, v in config.items() if k != "apiKeyEnv"},
        ),
        headers=admin_headers,
    )
    assert named.status_code == 400, named.text
    assert "ADMIN_API_KEY" in named.json()["error"]["message"]


def test_a_model_key_variable_ending_in_key_is_accepted(http, admin_headers):
    config = {
        **_spec("x")["config"],
        "auth": "key",
        "apiKeyEnv": "SHARED_VENDOR_KEY",
    }
    response = http.post(
        "/admin/models",
        json=_spec(unique_model(), config=config),
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text


def test_a_model_names_its_fallbacks(http, admin_headers, client_a):
    name = unique_model()
    created = http.post(
        "/admin/models",
        json=_spec(name, fallbacks=["demo-anthropic", "demo-openai"]),
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["fallbacks"] == ["demo-anthropic", "demo-openai"]
    listed = {
        m["name"]: m
        for m in http.get("/models", headers=client_a.headers).json()["items"]
    }
    assert listed[name]["fallbacks"] == ["demo-anthropic", "demo-openai"]
    itself = http.put(
        f"/admin/models/{name}",
        json=_spec(name, fallbacks=[name]),
        headers=admin_headers,
    )
    assert itself.status_code == 400
    assert itself.json()["error"]["errors"][0]["field"] == "fallbacks"
