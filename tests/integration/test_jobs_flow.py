"""Jobs end to end: HTTP app, worker actors, fake provider, database."""

import time
from collections import Counter

import pytest
from bson import ObjectId
from pymongo import MongoClient

from pipeline.settings import Settings
from tests.support.api import (
    all_results,
    create_model,
    fake_model,
    register_client,
    submit_job,
    wait_for_job,
)
from tests.support.fake_provider import unique_model
from tests.support.net import wait_until
from tests.support.workers import holds_nothing_of, worker_stats

pytestmark = pytest.mark.ray


def _inline(model, n, prefix="q"):
    return [
        {
            "model": model,
            "userContent": f"{prefix} {i} word",
            "customId": f"{prefix}-{i}",
        }
        for i in range(n)
    ]


def test_two_thousand_items_three_models_two_clients(
    http, admin_headers, fake
):
    limits = {"openai": 4, "anthropic": 6, "gemini": 5}
    models = {}
    for provider, limit in limits.items():
        name = unique_model(provider)
        create_model(
            http,
            admin_headers,
            fake.url,
            name,
            provider=provider,
            max_concurrency=limit,
        )
        fake.configure({name: {"latencyMs": {"min": 5, "max": 40}}})
        models[provider] = name
    alice = register_client(http, admin_headers, "alice")
    bob = register_client(http, admin_headers, "bob")
    names = list(models.values())
    sizes = {"a": 1200, "b": 800}
    expected = {name: 0 for name in names}
    jobs = []
    for (prefix, size), client in zip(
        sizes.items(), (alice, bob), strict=True
    ):
        items = []
        for i in range(size):
            model = names[i % 3]
            expected[model] += 1
            items.append(
                {
                    "model": model,
                    "userContent": f"{prefix} {i}",
                    "customId": f"{prefix}{i}",
                }
            )
        jobs.append((client, submit_job(http, client, items)))
    for client, job in jobs:
        done = wait_for_job(http, client, job["id"], timeout_s=240)
        assert done["status"] == "PROCESSED"
        assert done["counts"]["PROCESSED"] == job["totalItems"]
        assert done["counts"]["FAILED"] == 0
        items = all_results(http, client, job["id"])
        assert [i["seq"] for i in items] == list(range(job["totalItems"]))
        assert all(
            i["status"] == "PROCESSED" and i["attempts"] == 1 for i in items
        )
        # The fake echoes the user message: answers match their items.
        assert all(
            i["result"]["text"] == f"{i['customId'][0]} {i['customId'][1:]}"
            for i in items
        )
        tokens_in = sum(i["result"]["inputTokens"] for i in items)
        tokens_out = sum(i["result"]["outputTokens"] for i in items)
        assert done["usage"] == {
            "inputTokens": tokens_in,
            "outputTokens": tokens_out,
        }
        cost = sum(i["result"]["cost"] for i in items)
        assert done["cost"] == pytest.approx(cost)
        assert done["progress"] == 1.0
    for provider, name in models.items():
        stats = fake.stats(name)
        # Each item called exactly once; never more in flight than allowed
        # across the two worker replicas of the provider.
        assert stats["requests"] == expected[name]
        assert 1 <= stats["maxInFlight"] <= limits[provider]


def test_single_item_is_picked_up_without_waiting_for_a_poll(
    http, admin_headers, fake, client_a, service_env
):
    """The notification starts a job; the poll is only a safety net.

    A job that ends with no poll begun (nor running) on any worker since
    before it was submitted was started by its notification. A poll
    may run by chance during a try (every POLL_INTERVAL): such a try
    proves nothing and another is made. Without notifications every
    try sees a poll, and the test fails.
    """
    name = fake_model(http, admin_headers, fake, {"latencyMs": 5})
    replicas = range(int(service_env["WORKER_REPLICAS"]))
    warm_up = submit_job(http, client_a, _inline(name, 1, "warm"))
    wait_for_job(http, client_a, warm_up["id"], timeout_s=60)

    def polls():
        return [worker_stats("openai", r)["polls"] for r in replicas]

    deadline = time.monotonic() + 120
    tries = 0
    while time.monotonic() < deadline:
        before = polls()
        if any(p["running"] for p in before):
            time.sleep(0.05)
            continue
        tries += 1
        job = submit_job(http, client_a, _inline(name, 1, f"try{tries}"))
        done = wait_for_job(http, client_a, job["id"], timeout_s=60)
        assert done["status"] == "PROCESSED"
        after = polls()
        if [p["begun"] for p in after] == [p["begun"] for p in before]:
            return
    raise AssertionError(
        f"each of {tries} jobs was picked up only after a poll began"
    )


def test_nothing_is_written_when_one_item_is_bad(
    http, admin_headers, fake, client_a, mongo_uri, db_name
):
    name = fake_model(http, admin_headers, fake)
    prompt = http.post(
        "/prompts",
        json={
            "name": "t",
            "systemPrompt": "s",
            "userTemplate": "Hi {{who}} {{where}}",
        },
        headers=client_a.headers,
    ).json()
    items = [
        {"model": name, "userContent": "fine"},
        {"model": "no-such-model", "userContent": "x"},
        {
            "model": name,
            "promptId": "0123456789abcdef01234567",
            "variables": {},
        },
        {"model": name, "promptId": prompt["id"], "variables": {"who": "Ann"}},
        {
            "model": name,
            "promptId": prompt["id"],
            "promptVersion": 9,
            "variables": {},
        },
        {"model": name, "userContent": "dup", "customId": "same"},
        {"model": name, "userContent": "dup", "customId": "same"},
    ]
    response = http.post(
        "/jobs", json={"items": items}, headers=client_a.headers
    )
    assert response.status_code == 400
    error = response.json()["error"]
    fields = {e["field"] for e in error["errors"]}
    assert fields == {
        "items[1].model",
        "items[2].promptId",
        "items[3].variables",
        "items[4].promptId",
        "items[6].customId",
    }
    assert error["unknownModels"] == ["no-such-model"]
    assert set(error["unknownPrompts"]) == {
        "0123456789abcdef01234567",
        prompt["id"],
    }
    assert "where" in next(
        e["message"]
        for e in error["errors"]
        if e["field"] == "items[3].variables"
    )
    assert http.get("/jobs", headers=client_a.headers).json()["items"] == []
    with MongoClient(mongo_uri) as mongo:
        owner = ObjectId(client_a.client_id)
        assert mongo[db_name].items.count_documents({"clientId": owner}) == 0
        assert mongo[db_name].jobs.count_documents({"clientId": owner}) == 0


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"userContent": "no model"}, "items[0].model"),
        ({"model": "m"}, "items[0]"),
        (
            {"model": "m", "userContent": "x", "temperature": 5},
            "items[0].temperature",
        ),
        (
            {"model": "m", "userContent": "x", "variables": {"a": 1}},
            "items[0]",
        ),
        ({"model": "m", "promptId": "p", "systemPrompt": "s"}, "items[0]"),
    ],
)
def test_item_shapes_are_checked(http, client_a, item, field):
    response = http.post(
        "/jobs", json={"items": [item]}, headers=client_a.headers
    )
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["error"]["errors"]]


def test_empty_and_oversized_jobs(
    http, admin_headers, fake, client_a, service_env, mongo_uri, db_name
):
    response = http.post("/jobs", json={"items": []}, headers=client_a.headers)
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["field"] == "items"

    limit = Settings.from_env(service_env).max_items_per_job
    name = fake_model(http, admin_headers, fake)
    item = {"model": name, "userContent": "x"}
    response = http.post(
        "/jobs",
        json={"items": [item] * (limit + 1)},
        headers=client_a.headers,
        timeout=120,
    )
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert f"at most {limit} items" in error["message"]
    assert http.get("/jobs", headers=client_a.headers).json()["items"] == []
    owner = ObjectId(client_a.client_id)
    with MongoClient(mongo_uri) as mongo:
        assert mongo[db_name].jobs.count_documents({"clientId": owner}) == 0
        assert mongo[db_name].items.count_documents({"clientId": owner}) == 0


def test_prompt_items_are_rendered_and_pinned(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake)
    fake.configure(
        {
            name: {
                "latencyMs": 5,
                "rules": [{"match": "(?s)Shout.*", "reply": "LOUD"}],
            }
        }
    )
    prompt = http.post(
        "/prompts",
        json={
            "name": "t",
            "systemPrompt": "Whisper.",
            "userTemplate": "Greet {{who}}",
        },
        headers=client_a.headers,
    ).json()
    http.put(
        f"/prompts/{prompt['id']}",
        json={
            "name": "t",
            "systemPrompt": "Shout!",
            "userTemplate": "Greet {{who}}",
        },
        headers=client_a.headers,
    )
    job = submit_job(
        http,
        client_a,
        [
            {
                "model": name,
                "promptId": prompt["id"],
                "promptVersion": 1,
                "variables": {"who": "Ann"},
            },
            {
                "model": name,
                "promptId": prompt["id"],
                "variables": {"who": "Bob"},
            },
        ],
    )
    wait_for_job(http, client_a, job["id"], timeout_s=60)
    first, second = all_results(http, client_a, job["id"])
    assert first["result"]["text"] == "Greet Ann"  # v1: no rule matches, echo
    assert second["result"]["text"] == "LOUD"  # latest: "Shout!" matches


def test_results_pages_and_json_lines(http, admin_headers, fake, client_a):
    name = fake_model(
        http, admin_headers, fake, {"latencyMs": 1}, max_concurrency=8
    )
    job = submit_job(http, client_a, _inline(name, 250))
    wait_for_job(http, client_a, job["id"], timeout_s=60)
    page = http.get(
        f"/jobs/{job['id']}/results",
        params={"limit": 100},
        headers=client_a.headers,
    ).json()
    assert len(page["items"]) == 100 and page["nextCursor"] == "100"
    last = http.get(
        f"/jobs/{job['id']}/results",
        params={"limit": 100, "cursor": 200},
        headers=client_a.headers,
    ).json()
    assert len(last["items"]) == 50 and last["nextCursor"] is None
    assert [i["customId"] for i in last["items"]] == [
        f"q-{i}" for i in range(200, 250)
    ]
    lines = http.get(
        f"/jobs/{job['id']}/results",
        headers={**client_a.headers, "Accept": "application/x-ndjson"},
    )
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    import json

    rows = [json.loads(line) for line in lines.text.splitlines()]
    assert [r["customId"] for r in rows] == [f"q-{i}" for i in range(250)]
    same = http.get(
        f"/jobs/{job['id']}/results",
        params={"format": "jsonl"},
        headers=client_a.headers,
    )
    assert same.text == lines.text


def test_results_are_readable_while_the_job_runs(
    http, admin_headers, fake, client_a
):
    name = fake_model(
        http, admin_headers, fake, {"latencyMs": 300}, max_concurrency=2
    )
    job = submit_job(http, client_a, _inline(name, 40))
    state = {}

    def partly_processed():
        nonlocal state
        state = http.get(f"/jobs/{job['id']}", headers=client_a.headers).json()
        return 0 < state["counts"]["PROCESSED"] < 40

    wait_until(partly_processed, timeout_s=60, what="some items processed")
    assert state["status"] == "PROCESSING"
    items = all_results(http, client_a, job["id"])
    statuses = {i["status"] for i in items}
    assert "PROCESSED" in statuses and statuses & {"PENDING", "PROCESSING"}
    wait_for_job(http, client_a, job["id"], timeout_s=60)


def test_job_listing(http, admin_headers, fake, client_b):
    name = fake_model(http, admin_headers, fake)
    ids = [
        submit_job(http, client_b, _inline(name, 1))["id"] for _ in range(3)
    ]
    first = http.get(
        "/jobs", params={"limit": 2}, headers=client_b.headers
    ).json()
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    rest = http.get(
        "/jobs",
        params={"limit": 2, "cursor": first["nextCursor"]},
        headers=client_b.headers,
    ).json()
    assert [j["id"] for j in rest["items"]] == ids[:1]
    for job_id in ids:
        wait_for_job(http, client_b, job_id, timeout_s=30)
    done = http.get(
        "/jobs", params={"status": "PROCESSED"}, headers=client_b.headers
    ).json()
    assert len(done["items"]) == 3


def test_idempotency_key_returns_the_original_job(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake)
    body = {"items": _inline(name, 3), "idempotencyKey": "batch-7"}
    first = http.post("/jobs", json=body, headers=client_a.headers)
    again = http.post("/jobs", json=body, headers=client_a.headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = http.post(
        "/jobs",
        json={**body, "items": _inline(name, 4)},
        headers=client_a.headers,
    )
    assert other.status_code == 409
    assert other.json()["error"]["jobId"] == first.json()["id"]
    listed = http.get("/jobs", headers=client_a.headers).json()["items"]
    assert len(listed) == 1


def test_batch_mode_options_are_checked_and_shown(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake)
    items = _inline(name, 1)
    for body, field in [
        ({"items": items, "mode": "auto"}, "deadline"),
        ({"items": items, "deadline": "soon"}, "deadline"),
        ({"items": items, "mode": "batch", "deadline": "2h"}, "deadline"),
        ({"items": items, "mode": "fast"}, "mode"),
    ]:
        bad = http.post("/jobs", json=body, headers=client_a.headers)
        assert bad.status_code == 400, body
        fields = [e["field"] for e in bad.json()["error"]["errors"]]
        assert any(field in f for f in fields), bad.json()
    body = {"items": items, "deadline": "48h", "idempotencyKey": "dl-1"}
    first = http.post("/jobs", json=body, headers=client_a.headers)
    assert first.status_code == 201
    job = first.json()
    assert job["mode"] == "auto" and job["deadline"] is not None
    assert job["liveOnlyProviders"] == []
    # The deadline is kept as a duration until the job is made: the same
    # request again is the same request.
    again = http.post("/jobs", json=body, headers=client_a.headers)
    assert again.status_code == 200 and again.json()["id"] == job["id"]


def test_another_clients_job_is_404(
    http, admin_headers, fake, client_a, client_b
):
    name = fake_model(http, admin_headers, fake)
    job = submit_job(http, client_a, _inline(name, 2))
    base = f"/jobs/{job['id']}"
    for method, path in [
        ("GET", base),
        ("GET", base + "/results"),
        ("POST", base + "/cancel"),
        ("POST", base + "/consume"),
        ("POST", base + "/error-consuming"),
        ("DELETE", base),
    ]:
        assert (
            http.request(method, path, headers=client_b.headers).status_code
            == 404
        )
    assert http.get(base, headers=client_a.headers).status_code == 200


def test_consume_and_illegal_transitions(http, admin_headers, fake, client_a):
    name = fake_model(http, admin_headers, fake)
    job = submit_job(http, client_a, _inline(name, 2))
    wait_for_job(http, client_a, job["id"], timeout_s=30)
    canceled = http.post(f"/jobs/{job['id']}/cancel", headers=client_a.headers)
    assert canceled.status_code == 409
    assert canceled.json()["error"]["currentStatus"] == "PROCESSED"
    consumed = http.post(
        f"/jobs/{job['id']}/consume", headers=client_a.headers
    )
    assert (
        consumed.status_code == 200 and consumed.json()["status"] == "CONSUMED"
    )
    assert consumed.json()["consumedAt"]
    again = http.post(
        f"/jobs/{job['id']}/error-consuming", headers=client_a.headers
    )
    assert again.status_code == 409
    assert again.json()["error"]["currentStatus"] == "CONSUMED"


def test_cancel_keeps_what_ran_and_cancels_the_rest(
    http, admin_headers, fake, client_a, service_env
):
    name = fake_model(
        http, admin_headers, fake, {"latencyMs": 150}, max_concurrency=2
    )
    job = submit_job(http, client_a, _inline(name, 60))
    wait_until(
        lambda: (
            http.get(f"/jobs/{job['id']}", headers=client_a.headers).json()[
                "counts"
            ]["PROCESSED"]
            >= 2
        ),
        timeout_s=60,
        what="two items processed",
    )
    response = http.post(f"/jobs/{job['id']}/cancel", headers=client_a.headers)
    assert (
        response.status_code == 200 and response.json()["status"] == "CANCELED"
    )
    done = wait_for_job(
        http, client_a, job["id"], until=("CANCELED",), timeout_s=60
    )
    counts = done["counts"]
    assert counts["CANCELED"] > 0 and counts["PROCESSED"] >= 2
    assert counts["CANCELED"] + counts["PROCESSED"] == 60
    items = all_results(http, client_a, job["id"])
    assert sum(i["status"] == "CANCELED" for i in items) == counts["CANCELED"]
    _assert_no_call_follows(fake, name, counts["PROCESSED"], service_env)


def test_delete_hides_the_job_and_cancels_its_items(
    http, admin_headers, fake, client_a, service_env, mongo_uri, db_name
):
    name = fake_model(
        http, admin_headers, fake, {"latencyMs": 200}, max_concurrency=1
    )
    job = submit_job(http, client_a, _inline(name, 30))
    assert (
        http.delete(f"/jobs/{job['id']}", headers=client_a.headers).status_code
        == 204
    )
    assert (
        http.get(f"/jobs/{job['id']}", headers=client_a.headers).status_code
        == 404
    )
    assert http.get("/jobs", headers=client_a.headers).json()["items"] == []
    with MongoClient(mongo_uri) as mongo:
        items = mongo[db_name].items
        job_id = ObjectId(job["id"])
        statuses: Counter[str] = Counter()

        def settled():
            statuses.clear()
            statuses.update(i["status"] for i in items.find({"jobId": job_id}))
            return not statuses["PENDING"] and not statuses["PROCESSING"]

        wait_until(settled, timeout_s=60, what="the deleted job's items")
        # What had started may finish; the rest is canceled.
        assert set(statuses) <= {"CANCELED", "PROCESSED"}
        assert statuses["CANCELED"] > 0
        assert statuses["CANCELED"] + statuses["PROCESSED"] == 30
    _assert_no_call_follows(fake, name, statuses["PROCESSED"], service_env)


def _assert_no_call_follows(fake, model, processed, service_env):
    """No call of ``model`` runs or can start, and each one made counts.

    Called once none of the model's items is PENDING or PROCESSING: a
    call could then only come from a worker's queue of claimed items,
    so both workers must hold nothing of the model.
    """
    replicas = int(service_env["WORKER_REPLICAS"])
    wait_until(
        lambda: holds_nothing_of(model, "openai", replicas),
        timeout_s=30,
        what=f"the workers to let go of {model}",
    )
    stats = fake.stats(model)
    assert stats["inFlight"] == 0
    # Each processed item was called once; no canceled item was called.
    assert stats["requests"] == processed
