"""Optimization runs over HTTP, driven by the cluster's optimizer actor.

The target model is the fake provider's simulated task (its accuracy a
known function of the prompt) and the meta model is its scripted one,
so a run must find a better prompt; the fake server counts every call.
"""

import json
import time

import pytest

from providers.fake.simulation import (
    STARTING_PROMPT,
    task_answer,
    task_dataset,
)
from tests.support.api import create_model, submit_job, wait_for_job
from tests.support.fake_provider import unique_model
from tests.support.net import wait_until

pytestmark = pytest.mark.ray

FINISHED = ("SUCCEEDED", "FAILED", "CANCELED")


def _models(http, admin_headers, fake, *, concurrency=16, latency_ms=5):
    target, meta = unique_model("task"), unique_model("meta")
    for name, kind in ((target, "task"), (meta, "meta")):
        create_model(
            http,
            admin_headers,
            fake.url,
            name,
            max_concurrency=concurrency,
        )
        fake.configure({name: {"simulate": kind, "latencyMs": latency_ms}})
    return target, meta


def _run_body(target, meta, **changes):
    body = {
        "name": "calculator",
        "workingPrompts": [{"text": STARTING_PROMPT}],
        "examples": task_dataset(40, seed=3),
        "targetModel": target,
        "metaModel": meta,
        "scorer": {"kind": "exact"},
        "minibatchSize": 6,
        "budget": {
            "iterations": 5,
            "candidatesPerIteration": 3,
            "maxCalls": 600,
            "patience": 5,
        },
        "seed": 11,
    }
    body.update(changes)
    return body


def _wait_run(http, client, run_id, timeout_s=180.0):
    deadline = time.monotonic() + timeout_s
    run = {}
    while time.monotonic() < deadline:
        run = http.get(f"/runs/{run_id}", headers=client.headers).json()
        if run["status"] in FINISHED:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def test_run_finds_a_better_prompt(http, admin_headers, fake, client_a):
    target, meta = _models(http, admin_headers, fake)
    response = http.post(
        "/runs", json=_run_body(target, meta), headers=client_a.headers
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] in ("QUEUED", "RUNNING")
    run = _wait_run(http, client_a, created["id"])
    assert run["status"] == "SUCCEEDED", run.get("error")
    result = run["result"]
    assert result["bestScore"] > result["baselineScore"]
    assert result["recommendation"] == "best"
    assert result["comparison"]["low"] > 0
    # Every candidate after the seed names its parent and the reason.
    proposed = [c for c in run["candidates"] if c["iteration"] > 0]
    assert proposed
    assert all(c["parents"] and c["rationale"] for c in proposed)
    # The budget holds, counted where the calls land. The run counts an
    # answer it reads back from its own store too (so a resumed run
    # accounts as the original did): its count is an upper bound.
    calls = fake.stats(target)["requests"] + fake.stats(meta)["requests"]
    assert 0 < calls <= run["progress"]["calls"] <= 600
    assert run["progress"]["cost"] > 0
    # The report is one page with no reference to the network.
    report = http.get(
        f"/runs/{created['id']}/report", headers=client_a.headers
    )
    assert report.status_code == 200
    assert "<svg" in report.text and "http" not in report.text.lower()


def test_promote_makes_a_new_prompt_version(
    http, admin_headers, fake, client_a
):
    target, meta = _models(http, admin_headers, fake)
    prompt = http.post(
        "/prompts",
        json={"name": "calc", "systemPrompt": STARTING_PROMPT},
        headers=client_a.headers,
    ).json()
    body = _run_body(
        target, meta, workingPrompts=None, prompts=[{"promptId": prompt["id"]}]
    )
    del body["workingPrompts"]
    created = http.post("/runs", json=body, headers=client_a.headers).json()
    run = _wait_run(http, client_a, created["id"])
    assert run["workingPrompts"][0]["promptId"] == prompt["id"]
    promoted = http.post(
        f"/runs/{created['id']}/promote", headers=client_a.headers
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["version"] == 2
    assert promoted.json()["systemPrompt"] == run["result"]["bestPrompt"]


def test_runs_belong_to_their_client(
    http, admin_headers, fake, client_a, client_b
):
    target, meta = _models(http, admin_headers, fake)
    created = http.post(
        "/runs",
        json=_run_body(target, meta, budget={"iterations": 0}),
        headers=client_a.headers,
    ).json()
    for path in ("", "/report"):
        other = http.get(
            f"/runs/{created['id']}{path}", headers=client_b.headers
        )
        assert other.status_code == 404
    assert (
        http.post(
            f"/runs/{created['id']}/cancel", headers=client_b.headers
        ).status_code
        == 404
    )
    listed = http.get("/runs", headers=client_b.headers).json()["items"]
    assert created["id"] not in [r["id"] for r in listed]
    _wait_run(http, client_a, created["id"])


def test_bad_configurations_name_the_field(
    http, admin_headers, fake, client_a
):
    target, meta = _models(http, admin_headers, fake)
    cases = {
        "targetModel": {"targetModel": "no-such-model"},
        "examples": {"examples": []},
        "split": {"split": {"validationSize": 40}},
        "budget.maxCalls": {"budget": {"maxCalls": 5}},
        "scorer.kind": {"scorer": {"kind": "python"}},
        "examples[0].expected": {
            "examples": [{"inputs": {"input": "What is 1 + 1?"}}] * 4
        },
    }
    for field, change in cases.items():
        response = http.post(
            "/runs",
            json=_run_body(target, meta, **change),
            headers=client_a.headers,
        )
        assert response.status_code == 400, (field, response.text)
        fields = [e["field"] for e in response.json()["error"]["errors"]]
        assert any(f.startswith(field) for f in fields), (field, fields)
    listed = http.get("/runs", headers=client_a.headers).json()["items"]
    assert all(r["name"] != "rejected" for r in listed)


def test_cancel_stops_a_run(http, admin_headers, fake, client_a):
    target, meta = _models(http, admin_headers, fake, latency_ms=100)
    created = http.post(
        "/runs",
        json=_run_body(
            target, meta, budget={"iterations": 50, "patience": 50}
        ),
        headers=client_a.headers,
    ).json()
    canceled = http.post(
        f"/runs/{created['id']}/cancel", headers=client_a.headers
    )
    assert canceled.status_code == 200
    run = _wait_run(http, client_a, created["id"])
    assert run["status"] == "CANCELED"
    again = http.post(
        f"/runs/{created['id']}/cancel", headers=client_a.headers
    )
    assert again.status_code == 409


def test_a_run_and_a_job_share_the_model_limit(
    http, admin_headers, fake, client_a
):
    target, meta = _models(
        http, admin_headers, fake, concurrency=3, latency_ms=40
    )
    created = http.post(
        "/runs",
        json=_run_body(target, meta, budget={"iterations": 2}),
        headers=client_a.headers,
    ).json()
    job = submit_job(
        http,
        client_a,
        [
            {"model": target, "userContent": f"What is {n} + 1?"}
            for n in range(60)
        ],
    )
    wait_for_job(http, client_a, job["id"])
    _wait_run(http, client_a, created["id"])
    assert fake.stats(target)["maxInFlight"] <= 3


def test_datasets_take_json_lines(http, client_a):
    lines = "\n".join(
        json.dumps({"inputs": {"input": f"{n} + 1"}, "expected": str(n + 1)})
        for n in range(5)
    )
    response = http.post(
        "/datasets?name=lines",
        content=lines,
        headers={**client_a.headers, "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["size"] == 5
    bad = http.post(
        "/datasets",
        content='{"inputs": {"input": "x"}}\nnot json\n',
        headers={**client_a.headers, "Content-Type": "application/x-ndjson"},
    )
    assert bad.status_code == 400
    assert "line 2" in bad.text


def _stored_run(mongo_uri, db_name, run_id):
    from bson import ObjectId
    from pymongo import MongoClient

    with MongoClient(mongo_uri) as client:
        return client[db_name]["runs"].find_one({"_id": ObjectId(run_id)})


def test_failed_calls_are_not_scored_as_wrong(
    http, admin_headers, fake, client_a, mongo_uri, db_name
):
    target, meta = _models(http, admin_headers, fake)
    # A 400 is permanent: the call fails for good, no retry.
    fake.configure(
        {
            target: {
                "simulate": "task",
                "latencyMs": 5,
                "faults": [{"kind": "bad_request", "rate": 0.25}],
            }
        }
    )
    examples = task_dataset(40, seed=3)
    created = http.post(
        "/runs",
        json=_run_body(
            target, meta, examples=examples, budget={"iterations": 1}
        ),
        headers=client_a.headers,
    ).json()
    run = _wait_run(http, client_a, created["id"])
    assert run["status"] == "SUCCEEDED", run.get("error")
    baseline = _stored_run(mongo_uri, db_name, created["id"])["state"][
        "candidates"
    ][0]
    by_id = {e["id"]: e for e in examples}
    scores = baseline["validation"]
    errors = [i for i, s in scores.items() if s is None]
    assert errors, "the fault never fired"
    assert baseline["validationErrors"] == len(errors)
    for example_id, score in scores.items():
        if score is None:
            continue
        example = by_id[example_id]
        right = (
            task_answer(STARTING_PROMPT, example["inputs"]["input"])
            == example["expected"]
        )
        assert score == (1.0 if right else 0.0)


def test_control_task_keeps_the_baseline(http, admin_headers, fake, client_a):
    target, meta = _models(http, admin_headers, fake)
    fake.configure({target: {"simulate": "control", "latencyMs": 5}})
    created = http.post(
        "/runs", json=_run_body(target, meta), headers=client_a.headers
    ).json()
    run = _wait_run(http, client_a, created["id"])
    assert run["status"] == "SUCCEEDED", run.get("error")
    result = run["result"]
    assert result["recommendation"] == "baseline"
    assert result["bestId"] == result["baselineId"] == "c0"
    assert "keep the baseline" in result["message"]
    assert (
        http.post(
            f"/runs/{created['id']}/promote", headers=client_a.headers
        ).status_code
        == 409
    )


def test_a_run_whose_driver_died_resumes_without_paying_twice(
    http, admin_headers, fake, client_a
):
    import ray

    from pipeline.code_version import installed_code_version
    from pipeline.worker.names import optimizer_name

    body = {"budget": {"iterations": 4, "patience": 4}}
    target, meta = _models(http, admin_headers, fake, latency_ms=60)
    killed = http.post(
        "/runs", json=_run_body(target, meta, **body), headers=client_a.headers
    ).json()
    before = {}

    def past_first_iteration():
        nonlocal before
        before = http.get(
            f"/runs/{killed['id']}", headers=client_a.headers
        ).json()
        return (
            bool(before["progress"]) and before["progress"]["iteration"] >= 1
        )

    wait_until(past_first_iteration, timeout_s=120, what="an iteration")
    progress = before["progress"]
    # Killed mid-run, not after it.
    assert before["status"] == "RUNNING"
    assert progress["iteration"] < 4
    actor = ray.get_actor(
        optimizer_name(installed_code_version()), namespace="metasync"
    )
    ray.kill(actor, no_restart=False)
    resumed = _wait_run(http, client_a, killed["id"])
    assert resumed["status"] == "SUCCEEDED", resumed.get("error")
    killed_calls = (
        fake.stats(target)["requests"] + fake.stats(meta)["requests"]
    )

    # The same run, never interrupted, on models of its own.
    target2, meta2 = _models(http, admin_headers, fake, latency_ms=60)
    whole = http.post(
        "/runs",
        json=_run_body(target2, meta2, **body),
        headers=client_a.headers,
    ).json()
    whole = _wait_run(http, client_a, whole["id"])
    whole_calls = (
        fake.stats(target2)["requests"] + fake.stats(meta2)["requests"]
    )
    assert [c["prompt"] for c in resumed["candidates"]] == [
        c["prompt"] for c in whole["candidates"]
    ]
    assert resumed["result"]["bestPrompt"] == whole["result"]["bestPrompt"]
    assert resumed["progress"]["calls"] == whole["progress"]["calls"]
    # Only calls cut off in flight by the kill are made again (at most
    # the model's concurrency); every answered call was reused.
    assert whole_calls <= killed_calls <= whole_calls + 16


def test_a_run_spends_no_more_than_the_clients_budget(
    http, admin_headers, fake
):
    from tests.support.api import register_client

    target, meta = _models(http, admin_headers, fake)
    client = register_client(http, admin_headers, budget=0.003)
    created = http.post(
        "/runs",
        json=_run_body(
            target, meta, budget={"iterations": 20, "patience": 20}
        ),
        headers=client.headers,
    ).json()
    assert created["config"]["budget"]["maxCost"] == pytest.approx(0.003)
    run = _wait_run(http, client, created["id"])
    assert run["result"]["stopReason"] == "max_cost"
    assert 0 < run["progress"]["cost"] <= 0.003
