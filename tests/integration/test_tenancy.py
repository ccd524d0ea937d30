"""One client cannot read another's results, nor take the service down.

The result cache is per client (unless an admin shares a model's);
template rendering and ``max_tokens`` are bounded; a failed call gives
its token reservation back.
"""

from __future__ import annotations

import httpx2
import pytest

from pipeline.jobs.item_input import MAX_ITEM_TEXT_CHARS
from tests.support.api import (
    fake_model,
)

pytestmark = pytest.mark.ray


def _prompt(http, client, user_template: str) -> str:
    response = http.post(
        "/prompts",
        json={
            "name": "bomb",
            "systemPrompt": "s",
            "userTemplate": user_template,
        },
        headers=client.headers,
    )
    assert response.status_code == 201, response.text
    prompt_id: str = response.json()["id"]
    return prompt_id


def _jobs_of(http, client) -> list[dict]:
    listed = http.get("/jobs", headers=client.headers)
    assert listed.status_code == 200, listed.text
    items: list[dict] = listed.json()["items"]
    return items


def test_a_template_over_the_content_limit_is_refused_by_name(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake)
    prompt_id = _prompt(http, client_a, "{{a}} " * 10_000)
    fits = {"model": name, "promptId": prompt_id, "variables": {"a": "x"}}
    over = {**fits, "variables": {"a": "x" * 40}}  # 410,000 characters
    response = http.post(
        "/jobs", json={"items": [fits, over]}, headers=client_a.headers
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["errors"][0]["field"] == "items[1].variables"
    assert "410000" in error["errors"][0]["message"]
    assert str(MAX_ITEM_TEXT_CHARS) in error["errors"][0]["message"]
    assert _jobs_of(http, client_a) == []


def test_a_variable_value_over_the_content_limit_is_refused(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake)
    prompt_id = _prompt(http, client_a, "{{a}}")
    item = {
        "model": name,
        "promptId": prompt_id,
        "variables": {"a": "x" * (MAX_ITEM_TEXT_CHARS + 1)},
    }
    response = http.post(
        "/jobs", json={"items": [item]}, headers=client_a.headers
    )
    assert response.status_code == 400, response.text
    (problem,) = response.json()["error"]["errors"]
    assert problem["field"] == "items[0].variables"
    assert f"a is {MAX_ITEM_TEXT_CHARS + 1} characters" in problem["message"]
    assert str(MAX_ITEM_TEXT_CHARS) in problem["message"]


def test_a_template_bomb_is_refused_and_the_api_keeps_answering(
    http, admin_headers, fake, client_a, base_url
):
    """The issue's shape: it would render to 50 GB."""
    name = fake_model(http, admin_headers, fake)
    prompt_id = _prompt(http, client_a, "{{a}}" * 40_000)
    items = [
        {
            "model": name,
            "promptId": prompt_id,
            "variables": {"a": "v" * 12_500},
        }
        for _ in range(100)
    ]
    with httpx2.Client(base_url=base_url, timeout=60) as bomb:
        response = bomb.post(
            "/jobs", json={"items": items}, headers=client_a.headers
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["invalidItems"] == 100
    assert error["errors"][0]["field"] == "items[0].variables"
    assert http.get("/health").status_code == 200
    assert _jobs_of(http, client_a) == []
