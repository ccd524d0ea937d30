"""One client cannot read another's results, nor take the service down.

The result cache is per client (unless an admin shares a model's);
template rendering and ``max_tokens`` are bounded; a failed call gives
its token reservation back.
"""

from __future__ import annotations

import uuid

import httpx2
import pytest

from pipeline.catalog import DEFAULT_MAX_OUTPUT_TOKENS
from pipeline.jobs.item_input import MAX_ITEM_TEXT_CHARS
from tests.support.api import (
    all_results,
    fake_model,
    submit_job,
    wait_for_job,
)
from tests.support.net import wait_until

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


def _cache_filled(mongo_uri: str, db_name: str, text: str) -> None:
    """Wait until a result with ``text`` is in the result cache.

    A job's results are readable before the worker stores them in the
    cache: a later job must not miss it for that reason.
    """
    from pymongo import MongoClient

    with MongoClient(mongo_uri) as mongo:
        cache = mongo[db_name]["result_cache"]
        wait_until(
            lambda: cache.find_one({"result.text": text}) is not None,
            timeout_s=60,
            what=f"a cached result {text!r}",
        )


def _cached_job(http, client, name: str, text: str) -> dict:
    items = [{"model": name, "userContent": text, "temperature": 0}]
    job = submit_job(http, client, items, cache=True)
    wait_for_job(http, client, job["id"], timeout_s=60)
    (item,) = all_results(http, client, job["id"])
    result: dict = item["result"]
    return result


def test_the_result_cache_is_per_client(
    http, admin_headers, fake, client_a, client_b, mongo_uri, db_name
):
    name = fake_model(http, admin_headers, fake, {"latencyMs": 5})
    text = f"a guessed prompt {uuid.uuid4().hex[:8]}"
    first = _cached_job(http, client_a, name, text)
    assert first["cached"] is False
    _cache_filled(mongo_uri, db_name, text)
    # B asks the same: a call of its own, not A's answer.
    other = _cached_job(http, client_b, name, text)
    assert other["cached"] is False
    assert other["cost"] > 0
    assert fake.stats(name)["requests"] == 2
    # A's own repeat is served from A's cache.
    again = _cached_job(http, client_a, name, text)
    assert again["cached"] is True and again["text"] == text
    assert fake.stats(name)["requests"] == 2


def test_an_admin_may_share_a_models_cache(
    http, admin_headers, fake, client_a, client_b, mongo_uri, db_name
):
    name = fake_model(
        http, admin_headers, fake, {"latencyMs": 5}, shared_cache=True
    )
    listed = http.get("/models", headers=client_a.headers).json()["items"]
    assert {m["name"]: m for m in listed}[name]["sharedCache"] is True
    text = f"a shared prompt {uuid.uuid4().hex[:8]}"
    assert _cached_job(http, client_a, name, text)["cached"] is False
    _cache_filled(mongo_uri, db_name, text)
    shared = _cached_job(http, client_b, name, text)
    assert shared["cached"] is True and shared["text"] == text
    assert fake.stats(name)["requests"] == 1


def test_optimization_runs_are_bounded_like_jobs(
    http, admin_headers, fake, client_a
):
    target = fake_model(
        http, admin_headers, fake, {"latencyMs": 5}, maxOutputTokens=1000
    )
    meta = fake_model(http, admin_headers, fake, {"latencyMs": 5})
    body = {
        "workingPrompts": [{"text": "Answer."}],
        "examples": [{"inputs": {"input": "x" * 40}, "expected": "y"}] * 8,
        "targetModel": target,
        "metaModel": meta,
        "scorer": {"kind": "exact"},
    }
    cases = {
        "maxTokens": {"maxTokens": 1001},
        # 10,000 placeholders x 41 characters: over the content limit.
        "examples[0].inputs": {"userTemplate": "{{input}} " * 10_000},
    }
    for field, change in cases.items():
        response = http.post(
            "/runs", json={**body, **change}, headers=client_a.headers
        )
        assert response.status_code == 400, (field, response.text)
        problems = {
            e["field"]: e["message"]
            for e in response.json()["error"]["errors"]
        }
        assert field in problems, problems
        assert "over the limit of" in problems[field]
    assert http.get("/runs", headers=client_a.headers).json()["items"] == []
