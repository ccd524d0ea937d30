"""Listings page by keyset: each document once, in order, across inserts.

Over HTTP for the listings that used offsets (clients, prompts, datasets,
runs share the helper): a page is read after the previous page's last
document, so documents created or deleted between pages shift nothing.
"""

import pytest

from tests.conftest import DOCS_SECRET
from tests.support.api import register_client

pytestmark = pytest.mark.ray

PROMPT = {"name": "p", "systemPrompt": "s", "userTemplate": "hi {{x}}"}


def _pages(http, path, headers, limit, between_pages=None):
    """Every page of a listing: ``[[ids...], ...]``."""
    pages, cursor = [], None
    while True:
        params = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = http.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "nextCursor"}
        pages.append(body["items"])
        cursor = body["nextCursor"]
        if cursor is None:
            return pages
        if between_pages is not None:
            between_pages(len(pages))


def _create_prompt(http, client, n):
    response = http.post(
        "/prompts", json={**PROMPT, "name": f"p{n}"}, headers=client.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_prompts_page_each_once_in_order_across_inserts(http, client_a):
    created = [_create_prompt(http, client_a, n) for n in range(7)]
    newest_first = created[::-1]
    pages = _pages(http, "/prompts", client_a.headers, 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [p["id"] for page in pages for p in page] == newest_first

    added = []

    def insert(_page_number):
        added.append(_create_prompt(http, client_a, 100 + len(added)))

    pages = _pages(http, "/prompts", client_a.headers, 3, insert)
    # Newer than the cursor: the insertions shift nothing and repeat
    # nothing; the first page had every document there was.
    assert [p["id"] for page in pages for p in page] == newest_first
    assert len(added) == 2


def test_prompts_deleted_between_pages_are_skipped(http, client_a):
    created = [_create_prompt(http, client_a, n) for n in range(5)]
    doomed = created[0]  # the oldest: on the last page

    def delete(page_number):
        if page_number == 1:
            response = http.delete(
                f"/prompts/{doomed}", headers=client_a.headers
            )
            assert response.status_code == 204

    pages = _pages(http, "/prompts", client_a.headers, 2, delete)
    assert [p["id"] for page in pages for p in page] == created[:0:-1]


def test_clients_page_each_once_in_order_across_inserts(http, admin_headers):
    ours = [register_client(http, admin_headers).client_id for _ in range(5)]
    inserted = []

    def insert(_page_number):
        inserted.append(register_client(http, admin_headers).client_id)

    seen: list[str] = []
    cursor = None
    # Ours are the newest clients: the first pages hold them.
    while not set(ours) <= set(seen):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = http.get(
            "/admin/clients", params=params, headers=admin_headers
        ).json()
        assert set(body) == {"items", "nextCursor"}
        seen += [c["clientId"] for c in body["items"]]
        cursor = body["nextCursor"]
        assert cursor is not None or set(ours) <= set(seen)
        insert(len(seen))
    assert len(seen) == len(set(seen)), "a client was listed twice"
    assert [c for c in seen if c in ours] == ours[::-1]
    assert not set(inserted) & set(seen)


@pytest.mark.parametrize("path", ["/prompts", "/datasets", "/runs", "/jobs"])
@pytest.mark.parametrize("cursor", ["page-2", "0" * 64])
def test_a_bad_cursor_is_a_400_naming_it(http, client_a, path, cursor):
    response = http.get(
        path, params={"cursor": cursor}, headers=client_a.headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["field"] == "cursor"


def test_the_schema_declares_the_cursor_format(http):
    # A cursor the schema allows is one the listing accepts (none of the
    # schema's strings may be refused as malformed).
    schema = http.get("/openapi.json", auth=("user", DOCS_SECRET)).json()
    for path in ("/prompts", "/datasets", "/runs", "/jobs", "/admin/clients"):
        parameters = schema["paths"][path]["get"]["parameters"]
        (cursor,) = [p for p in parameters if p["name"] == "cursor"]
        declared = cursor["schema"]["anyOf"][0]
        assert declared["pattern"] == "^[0-9a-f]{24}$", path


def test_a_bad_client_cursor_is_a_400_naming_it(http, admin_headers):
    response = http.get(
        "/admin/clients", params={"cursor": "x"}, headers=admin_headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["field"] == "cursor"
