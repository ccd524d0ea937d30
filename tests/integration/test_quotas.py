"""Quotas over HTTP: pending items, budget, request rate, usage counters.

Items that must stay unfinished while a quota is checked go to a model
that always answers 429 with an hour's Retry-After: they wait, pending,
until their job is canceled (no timing involved).
"""

import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.support.api import (
    create_model,
    fake_model,
    register_client,
    submit_job,
    wait_for_job,
)
from tests.support.fake_provider import unique_model
from tests.support.net import wait_until

pytestmark = pytest.mark.ray

#: USD per million output tokens of the priced models: 0.001 per token.
OUTPUT_PER_MILLION = 1000.0
#: An hour: a rate-limited item waits longer than any test.
STUCK = {"faults": [{"kind": "rate_limit", "retryAfter": 3600}]}
FINAL = ("PROCESSED", "FAILED", "CANCELED")


def _items(model, n, max_tokens=None, prefix="q"):
    items = []
    for i in range(n):
        item = {"model": model, "userContent": f"{prefix} {i}"}
        if max_tokens is not None:
            item["maxTokens"] = max_tokens
        items.append(item)
    return items


def _priced_model(http, admin_headers, fake, behaviour=None):
    name = unique_model()
    create_model(
        http,
        admin_headers,
        fake.url,
        name,
        pricing=(0.0, OUTPUT_PER_MILLION),
    )
    fake.configure({name: behaviour or {"latencyMs": 5}})
    return name


def _usage(http, admin_headers, client):
    response = http.get(
        f"/admin/clients/{client.client_id}", headers=admin_headers
    )
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def _post(http, client, items, **options):
    return http.post(
        "/jobs", json={"items": items, **options}, headers=client.headers
    )


def _cancel(http, client, job):
    response = http.post(f"/jobs/{job['id']}/cancel", headers=client.headers)
    assert response.status_code == 200, response.text
    return wait_for_job(http, client, job["id"], until=("CANCELED",))


def _refused(response, word):
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert word in error["message"]
    assert int(response.headers["Retry-After"]) >= 1


def test_max_pending_items_admits_what_fits_and_frees_room_as_items_leave(
    http, admin_headers, fake
):
    stuck = fake_model(http, admin_headers, fake, STUCK)
    client = register_client(http, admin_headers, maxPendingItems=5)
    _refused(_post(http, client, _items(stuck, 6)), "quota is 5 pending")
    first = submit_job(http, client, _items(stuck, 4))
    _refused(_post(http, client, _items(stuck, 2)), "4 items are pending")
    second = submit_job(http, client, _items(stuck, 1))
    assert _usage(http, admin_headers, client)["pendingItems"] == 5
    _cancel(http, client, first)  # its 4 items leave
    third = submit_job(http, client, _items(stuck, 4))
    assert _usage(http, admin_headers, client)["pendingItems"] == 5
    for job in (second, third):
        _cancel(http, client, job)
    assert _usage(http, admin_headers, client)["pendingItems"] == 0


def test_the_budget_holds_the_estimate_and_keeps_only_what_was_spent(
    http, admin_headers, fake
):
    stuck = _priced_model(http, admin_headers, fake, STUCK)
    echo = _priced_model(http, admin_headers, fake)
    client = register_client(http, admin_headers, budget=1.0)
    # 250 output tokens at 0.001 USD: 0.25 USD (and 0 for the input).
    big = _post(http, client, _items(stuck, 100, 250))
    _refused(big, "budget")
    held = submit_job(http, client, _items(stuck, 4, 250))
    assert _usage(http, admin_headers, client)["reservedCost"] == 1.0
    _refused(_post(http, client, _items(stuck, 1, 250)), "budget")
    _cancel(http, client, held)
    assert _usage(http, admin_headers, client) == {
        "pendingItems": 0,
        "reservedCost": 0.0,
        "spentCost": 0.0,
    }

    ran = submit_job(http, client, _items(echo, 3, 250))
    done = wait_for_job(http, client, ran["id"])
    assert done["status"] == "PROCESSED" and 0 < done["cost"] < 0.75
    usage = _usage(http, admin_headers, client)
    assert usage["pendingItems"] == 0
    assert usage["reservedCost"] == pytest.approx(0.0, abs=1e-9)
    assert usage["spentCost"] == pytest.approx(done["cost"])

    chat = {"model": echo, "messages": [{"role": "user", "content": "hi"}]}
    too_dear = http.post(
        "/v1/chat/completions",
        json={**chat, "max_tokens": 2000},
        headers=client.headers,
    )
    _refused(too_dear, "budget")
    answered = http.post(
        "/v1/chat/completions",
        json={**chat, "max_tokens": 20},
        headers=client.headers,
    )
    assert answered.status_code == 200, answered.text
    output_tokens = answered.json()["usage"]["completion_tokens"]
    assert output_tokens > 0
    charged = _usage(http, admin_headers, client)["spentCost"]
    assert charged == pytest.approx(done["cost"] + output_tokens / 1000)


def test_the_request_rate_gate_refuses_the_request_over_the_quota(
    http, admin_headers
):
    client = register_client(http, admin_headers, requestsPerMinute=3)
    codes = [
        http.get("/jobs", headers=client.headers).status_code for _ in range(3)
    ]
    assert codes == [200, 200, 200]
    refused = http.get("/jobs", headers=client.headers)
    _refused(refused, "3 requests per minute")
    other = register_client(http, admin_headers, requestsPerMinute=3)
    assert http.get("/jobs", headers=other.headers).status_code == 200


def test_an_idempotency_key_names_a_new_job_once_its_job_is_deleted(
    http, admin_headers, fake, client_a
):
    model = fake_model(http, admin_headers, fake, {"latencyMs": 5})
    first = submit_job(http, client_a, _items(model, 2), idempotencyKey="k1")
    deleted = http.delete(f"/jobs/{first['id']}", headers=client_a.headers)
    assert deleted.status_code in (200, 204), deleted.text
    again = _post(http, client_a, _items(model, 2), idempotencyKey="k1")
    assert again.status_code == 201, again.text
    assert again.json()["id"] != first["id"]
    repeat = _post(http, client_a, _items(model, 2), idempotencyKey="k1")
    assert (repeat.status_code, repeat.json()["id"]) == (
        200,
        again.json()["id"],
    )


def test_usage_counters_match_a_recount_after_a_mixed_scenario(
    http, admin_headers, fake, mongo_uri, db_name
):
    echo = _priced_model(http, admin_headers, fake)
    stuck = _priced_model(http, admin_headers, fake, STUCK)
    flaky = _priced_model(
        http,
        admin_headers,
        fake,
        {
            "latencyMs": 5,
            "faults": [{"kind": "bad_request", "onCalls": [1, 2, 3]}],
        },
    )
    client = register_client(http, admin_headers, budget=100.0)
    consumed = submit_job(http, client, _items(echo, 5, 40))
    canceled = submit_job(http, client, _items(stuck, 3, 40))
    deleted = submit_job(http, client, _items(stuck, 2, 40))
    requeued = submit_job(http, client, _items(flaky, 3, 40))
    waiting = submit_job(http, client, _items(stuck, 2, 40))

    wait_for_job(http, client, consumed["id"])
    assert (
        http.post(f"/jobs/{consumed['id']}/consume", headers=client.headers)
    ).status_code == 200
    _cancel(http, client, canceled)
    assert (
        http.delete(f"/jobs/{deleted['id']}", headers=client.headers)
    ).status_code in (200, 204)
    failed = wait_for_job(http, client, requeued["id"])
    assert failed["counts"]["FAILED"] == 3
    assert (
        http.post(
            f"/admin/jobs/{requeued['id']}/requeue", headers=admin_headers
        )
    ).status_code == 202
    wait_for_job(http, client, requeued["id"], until=("PROCESSED",))

    client_id = ObjectId(client.client_id)
    with MongoClient(mongo_uri) as mongo:
        db = mongo[db_name]

        def deleted_items_canceled():
            return db["items"].count_documents(
                {"jobId": ObjectId(deleted["id"]), "status": "CANCELED"}
            ) == 2 and not db["jobs"].find_one(
                {"_id": ObjectId(deleted["id"])}
            ).get("journal")

        wait_until(deleted_items_canceled, what="the deleted job's cancel")
        unfinished = list(
            db["items"].find(
                {"clientId": client_id, "status": {"$nin": list(FINAL)}},
                {"estCost": 1},
            )
        )
        spent = sum(
            job.get("cost", 0.0)
            for job in db["jobs"].find({"clientId": client_id}, {"cost": 1})
        )
    usage = _usage(http, admin_headers, client)
    assert usage["pendingItems"] == len(unfinished) == 2
    assert usage["reservedCost"] == pytest.approx(
        sum(i["estCost"] for i in unfinished)
    )
    assert usage["spentCost"] == pytest.approx(spent)
    assert spent > 0
    _cancel(http, client, waiting)
    assert _usage(http, admin_headers, client)["pendingItems"] == 0
