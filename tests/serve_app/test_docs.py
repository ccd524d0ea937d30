import pytest

from tests.conftest import DOCS_SECRET

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_need_basic_auth(http, path):
    response = http.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert http.get(path, auth=("user", "wrong")).status_code == 401
    assert http.get(path, auth=("other", DOCS_SECRET)).status_code == 401
    assert http.get(path, auth=("user", DOCS_SECRET)).status_code == 200


def test_docs_pages_load_local_assets_only(http):
    for path in ["/docs", "/redoc"]:
        html = http.get(path, auth=("user", DOCS_SECRET)).text
        assert "/docs-assets/" in html
        assert "cdn" not in html.lower()
        assert "googleapis" not in html
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "redoc.standalone.js",
    ]:
        response = http.get(f"/docs-assets/{asset}")
        assert response.status_code == 200
        assert len(response.content) > 10_000


def test_openapi_lists_the_api(http):
    spec = http.get("/openapi.json", auth=("user", DOCS_SECRET)).json()
    for path in ["/admin/clients", "/models", "/prompts", "/health", "/ready"]:
        assert path in spec["paths"]
