"""One client cannot read another's results, nor take the service down.

The result cache is per client (unless an admin shares a model's);
template rendering and ``max_tokens`` are bounded; a failed call gives
its token reservation back.
"""

from __future__ import annotations

import httpx2
import pytest

from pipeline.catalog import DEFAULT_MAX_OUTPUT_TOKENS
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


def _chat(http, client, model: str, text: str, **options):
    return http.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": text}],
            **options,
        },
        headers=client.bearer,
    )


def test_max_tokens_is_bounded_by_the_models_limit(
    http, admin_headers, fake, client_a
):
    name = fake_model(
        http, admin_headers, fake, {"latencyMs": 5}, maxOutputTokens=1000
    )
    for field in ("max_tokens", "max_completion_tokens"):
        refused = _chat(http, client_a, name, "x", **{field: 1001})
        assert refused.status_code == 400, refused.text
        (problem,) = refused.json()["error"]["errors"]
        assert problem["field"] == field
        assert "limit of 1000" in problem["message"]
    item = {"model": name, "userContent": "x", "maxTokens": 1001}
    response = http.post(
        "/jobs", json={"items": [item]}, headers=client_a.headers
    )
    assert response.status_code == 400, response.text
    (problem,) = response.json()["error"]["errors"]
    assert problem["field"] == "items[0].maxTokens"
    assert "limit of 1000" in problem["message"]
    assert _jobs_of(http, client_a) == []
    # A model without a limit of its own has the default one.
    plain = fake_model(http, admin_headers, fake, {"latencyMs": 5})
    huge = _chat(http, client_a, plain, "x", max_tokens=1_000_000)
    assert huge.status_code == 400, huge.text
    assert str(DEFAULT_MAX_OUTPUT_TOKENS) in huge.text
    # What fits is served; nothing refused reached the provider.
    assert _chat(http, client_a, name, "x", max_tokens=1000).status_code == 200
    assert fake.stats(name)["requests"] == 1
    assert fake.stats(plain)["requests"] == 0


def test_failed_calls_give_their_tokens_back(
    http, admin_headers, fake, client_a
):
    """No call can leave a model in token debt for everyone else.

    Each failing call asks for 100,000 tokens of a model with 600 tokens
    per minute. Were its reservation kept, the next call on the same
    worker would wait for hours; with two worker replicas, one of three
    calls always lands after a failed one on the same worker.
    """
    name = fake_model(
        http,
        admin_headers,
        fake,
        {
            "latencyMs": 5,
            "faults": [{"kind": "bad_request", "onCalls": [1, 2]}],
        },
        tpm=600,
        maxOutputTokens=100_000,
    )
    for _ in range(2):
        failed = _chat(http, client_a, name, "fail", max_tokens=100_000)
        assert failed.status_code == 400, failed.text
        assert failed.json()["error"]["code"] == "upstream_rejected"
    served = _chat(http, client_a, name, "still serving", max_tokens=5)
    assert served.status_code == 200, served.text
    assert served.json()["choices"][0]["message"]["content"] == "still serving"
    assert fake.stats(name)["requests"] == 3
