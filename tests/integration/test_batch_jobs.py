"""Batch jobs end to end: HTTP API, worker actors, the fake's batch APIs.

A job with ``mode: "batch"`` is answered through the providers' batch
APIs (the official SDKs against the fake provider's batch endpoints),
never by live calls, at the batch price; its counts, results and cancel
behave as for a live job.
"""

import json

import pytest

from tests.support.api import (
    all_results,
    create_model,
    register_client,
    submit_job,
    wait_for_job,
)
from tests.support.fake_provider import unique_model
from tests.support.net import wait_until

pytestmark = pytest.mark.ray

#: USD per million tokens, live (input, output); batch is half.
PRICING = (1.0, 2.0)


def _batch_model(http, admin_headers, fake, provider, batch):
    name = unique_model(provider)
    create_model(
        http, admin_headers, fake.url, name, provider=provider, pricing=PRICING
    )
    fake.configure({name: {"batch": batch}})
    return name


def _items(model, n, prefix="b"):
    return [
        {
            "model": model,
            "userContent": f"{prefix} {i}",
            "customId": f"{prefix}{i}",
        }
        for i in range(n)
    ]


def _creates(fake, vendor):
    return fake.batch_stats().get(vendor, {}).get("creates", 0)


def _batch_cost(result):
    return (
        result["inputTokens"] * PRICING[0] / 2
        + result["outputTokens"] * PRICING[1] / 2
    ) / 1e6


# Azure OpenAI's model is a deployment (a global-batch one for batches),
# named in every line of the uploaded file.
@pytest.mark.parametrize(
    "provider", ["openai", "azure_openai", "anthropic", "gemini"]
)
def test_a_batch_job_is_answered_through_provider_batches(
    http, admin_headers, fake, provider
):
    model = _batch_model(
        http, admin_headers, fake, provider, {"durationMs": 300}
    )
    client = register_client(http, admin_headers)
    creates = _creates(fake, provider)
    job = submit_job(http, client, _items(model, 12), mode="batch")
    assert job["mode"] == "batch"

    done = wait_for_job(http, client, job["id"], timeout_s=120)
    assert done["status"] == "PROCESSED"
    assert done["counts"]["PROCESSED"] == 12
    assert done["counts"]["FAILED"] == done["counts"]["CANCELED"] == 0
    items = all_results(http, client, job["id"])
    assert [i["seq"] for i in items] == list(range(12))
    # The fake echoes the user message: answers match their items.
    assert [i["result"]["text"] for i in items] == [
        f"b {i}" for i in range(12)
    ]
    assert {i["result"]["via"] for i in items} == {"batch"}
    assert {i["attempts"] for i in items} == {1}
    for item in items:
        assert item["result"]["cost"] == pytest.approx(
            _batch_cost(item["result"])
        )
    # The API rounds a job's cost to 1e-8 USD (live would be twice it).
    assert done["cost"] == pytest.approx(
        sum(_batch_cost(i["result"]) for i in items), abs=1e-8
    )
    assert done["usage"]["inputTokens"] == sum(
        i["result"]["inputTokens"] for i in items
    )
    # Provider batches, and not one live call.
    assert _creates(fake, provider) > creates
    assert fake.stats(model)["requests"] == 0


def test_line_errors_are_retried_in_later_batches_within_max_attempts(
    http, admin_headers, fake
):
    failing = _batch_model(
        http,
        admin_headers,
        fake,
        "openai",
        {"durationMs": 200, "lineErrors": {"rate": 1.0, "status": 500}},
    )
    fine = _batch_model(
        http, admin_headers, fake, "openai", {"durationMs": 200}
    )
    client = register_client(http, admin_headers)
    items = _items(failing, 3, "f") + _items(fine, 3, "ok")
    job = submit_job(http, client, items, mode="batch", maxAttempts=2)

    done = wait_for_job(http, client, job["id"], timeout_s=120)
    assert done["status"] == "PROCESSED"
    assert done["counts"] == {
        "PENDING": 0,
        "PROCESSING": 0,
        "PROCESSED": 3,
        "FAILED": 3,
        "CANCELED": 0,
    }
    results = all_results(http, client, job["id"])
    failed = [i for i in results if i["model"] == failing]
    # Each failing line ran twice, in two provider batches.
    assert {i["status"] for i in failed} == {"FAILED"}
    assert {i["attempts"] for i in failed} == {2}
    assert {i["error"]["type"] for i in failed} == {"transient"}
    answered = [i for i in results if i["model"] == fine]
    assert {(i["status"], i["attempts"]) for i in answered} == {
        ("PROCESSED", 1)
    }
    assert fake.stats(failing)["requests"] == 0
    assert fake.stats(fine)["requests"] == 0


def test_canceling_a_batch_job_cancels_its_provider_batch(
    http, admin_headers, fake
):
    model = _batch_model(
        http, admin_headers, fake, "openai", {"durationMs": 600_000}
    )
    client = register_client(http, admin_headers)
    cancels = fake.batch_stats().get("openai", {}).get("cancels", 0)
    job = submit_job(http, client, _items(model, 5), mode="batch")

    def in_a_provider_batch():
        current = http.get(f"/jobs/{job['id']}", headers=client.headers)
        return current.json()["counts"]["PROCESSING"] == 5

    wait_until(in_a_provider_batch, timeout_s=60, what="the batch")
    response = http.post(f"/jobs/{job['id']}/cancel", headers=client.headers)
    assert response.status_code == 200, response.text

    done = wait_for_job(http, client, job["id"], timeout_s=120)
    assert done["status"] == "CANCELED"
    assert done["counts"]["CANCELED"] == 5
    assert done["counts"]["PROCESSED"] == done["counts"]["FAILED"] == 0
    assert sum(done["counts"].values()) == done["totalItems"]
    assert fake.batch_stats()["openai"]["cancels"] > cancels
    results = all_results(http, client, job["id"])
    assert {(i["status"], i["attempts"]) for i in results} == {("CANCELED", 0)}
    assert fake.stats(model)["requests"] == 0


def _json_lines(http, client, job_id):
    response = http.get(
        f"/jobs/{job_id}/results",
        params={"format": "jsonl"},
        headers=client.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def _same_for_any_job(line):
    """A result line without what differs from one job to another."""
    kept = {k: v for k, v in line.items() if k not in _PER_JOB}
    result = dict(kept.pop("result"))
    for key in _PER_ANSWER:
        result.pop(key)
    return {**kept, "result": result}


# The item's id and times, and how and at what price it was answered.
_PER_JOB = ("id", "startedAt", "finishedAt")
_PER_ANSWER = ("latencyMs", "cost", "via")


def test_json_lines_of_a_batch_job_are_those_of_a_live_job(
    http, admin_headers, fake
):
    model = _batch_model(
        http, admin_headers, fake, "openai", {"durationMs": 200}
    )
    client = register_client(http, admin_headers)
    items = _items(model, 7)
    batch = submit_job(http, client, items, mode="batch")
    live = submit_job(http, client, items)
    for job in (batch, live):
        done = wait_for_job(http, client, job["id"], timeout_s=120)
        assert done["counts"]["PROCESSED"] == 7

    batch_lines = _json_lines(http, client, batch["id"])
    live_lines = _json_lines(http, client, live["id"])
    # The export streams what the paged results show.
    assert batch_lines == all_results(http, client, batch["id"])
    assert [set(line) for line in batch_lines] == [
        set(line) for line in live_lines
    ]
    assert [_same_for_any_job(line) for line in batch_lines] == [
        _same_for_any_job(line) for line in live_lines
    ]
    assert [line["result"]["via"] for line in batch_lines] == ["batch"] * 7
    assert [line["result"]["via"] for line in live_lines] == ["live"] * 7
    for ours, theirs in zip(batch_lines, live_lines, strict=True):
        assert ours["result"]["cost"] == pytest.approx(
            theirs["result"]["cost"] / 2
        )


def test_an_auto_job_uses_batches_only_when_its_deadline_allows(
    http, admin_headers, fake
):
    far = _batch_model(
        http, admin_headers, fake, "openai", {"durationMs": 300}
    )
    near = _batch_model(
        http, admin_headers, fake, "openai", {"durationMs": 300}
    )
    client = register_client(http, admin_headers)
    # A deadline alone means auto: 48h leaves the 24h window and the 2h
    # margin, 3h does not.
    far_job = submit_job(http, client, _items(far, 4, "far"), deadline="48h")
    near_job = submit_job(
        http, client, _items(near, 4, "near"), mode="auto", deadline="3h"
    )
    assert far_job["mode"] == near_job["mode"] == "auto"

    far_done = wait_for_job(http, client, far_job["id"], timeout_s=120)
    near_done = wait_for_job(http, client, near_job["id"], timeout_s=120)
    assert far_done["status"] == near_done["status"] == "PROCESSED"
    far_items = all_results(http, client, far_job["id"])
    assert {i["result"]["via"] for i in far_items} == {"batch"}
    assert far_done["cost"] == pytest.approx(
        sum(_batch_cost(i["result"]) for i in far_items), abs=1e-8
    )
    assert fake.stats(far)["requests"] == 0
    near_items = all_results(http, client, near_job["id"])
    assert {i["result"]["via"] for i in near_items} == {"live"}
    assert fake.stats(near)["requests"] == 4
