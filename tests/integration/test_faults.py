"""Faults lose no item: killed workers, 429 storms, 5xx, cut streams."""

import os
import signal
import time

import pytest

from tests.support.api import (
    all_results,
    create_model,
    fake_model,
    submit_job,
    wait_for_job,
)
from tests.support.fake_provider import unique_model
from tests.support.net import wait_until
from tests.support.workers import worker_stats

pytestmark = pytest.mark.ray


def _items(model, n):
    return [
        {"model": model, "userContent": f"q {i}", "customId": str(i)}
        for i in range(n)
    ]


def _wait_until_running(http, client, job):
    """Until the job has a processed item (its calls are under way)."""
    wait_until(
        lambda: (
            http.get(f"/jobs/{job['id']}", headers=client.headers).json()[
                "counts"
            ]["PROCESSED"]
            > 0
        ),
        timeout_s=60,
        what=f"job {job['id']} to be running",
    )


def test_a_worker_killed_mid_job_loses_and_repeats_nothing(
    http, admin_headers, fake, client_a
):
    name = unique_model("anthropic")
    create_model(
        http,
        admin_headers,
        fake.url,
        name,
        provider="anthropic",
        max_concurrency=6,
    )
    fake.configure({name: {"latencyMs": 150}})
    job = submit_job(http, client_a, _items(name, 240))
    deadline = time.monotonic() + 60
    while True:
        state = http.get(f"/jobs/{job['id']}", headers=client_a.headers).json()
        if state["counts"]["PROCESSED"] >= 30:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    victim = worker_stats("anthropic", 0)
    os.kill(victim["pid"], signal.SIGKILL)

    done = wait_for_job(http, client_a, job["id"], timeout_s=180)
    assert done["status"] == "PROCESSED"
    assert done["counts"] == {
        "PENDING": 0,
        "PROCESSING": 0,
        "PROCESSED": 240,
        "FAILED": 0,
        "CANCELED": 0,
    }
    items = all_results(http, client_a, job["id"])
    assert all(i["status"] == "PROCESSED" for i in items)
    assert [i["result"]["text"] for i in items] == [
        f"q {i}" for i in range(240)
    ]
    # Counted once each: the job's totals are the sum of its items'.
    assert done["usage"]["outputTokens"] == sum(
        i["result"]["outputTokens"] for i in items
    )
    # Calls cut by the kill were made again: never fewer calls than items.
    assert fake.stats(name)["requests"] >= 240
    assert fake.stats(name)["maxInFlight"] <= 6
    restarted = worker_stats("anthropic", 0)
    assert restarted["incarnation"] != victim["incarnation"]


def test_a_429_storm_waits_for_retry_after(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake, max_concurrency=20)
    retry_after = 2
    fake.configure(
        {
            name: {
                "latencyMs": 10,
                "faults": [
                    {
                        "kind": "rate_limit",
                        "onCalls": list(range(1, 21)),
                        "retryAfter": retry_after,
                    }
                ],
            }
        }
    )
    job = submit_job(http, client_a, _items(name, 20), maxAttempts=5)
    done = wait_for_job(http, client_a, job["id"], timeout_s=60)
    assert done["counts"]["PROCESSED"] == 20
    stats = fake.stats(name)
    assert stats["statusCounts"]["429"] == 20
    stamps = sorted(stats["timestamps"])
    refused, retried = stamps[:20], stamps[20:]
    assert len(retried) == 20
    # If every retry came at least retry_after after its own refusal,
    # the sorted times keep that gap pairwise (whatever the pairing).
    gaps = [r - f for r, f in zip(retried, refused, strict=True)]
    assert min(gaps) >= retry_after
    items = all_results(http, client_a, job["id"])
    assert all(i["attempts"] == 2 for i in items)


def test_5xx_and_cut_responses_are_retried(
    http, admin_headers, fake, client_a
):
    name = unique_model("gemini")
    create_model(
        http,
        admin_headers,
        fake.url,
        name,
        provider="gemini",
        max_concurrency=4,
    )
    # The first 20 calls fail, alternately 503 and cut. They are over in
    # a few tens of milliseconds, before the first retry is due (a second
    # or so), so no item can use up its attempts: each failed call costs
    # exactly one more. (Faults on every Nth call instead made an item
    # fail all its attempts in about one run out of three.)
    fake.configure(
        {
            name: {
                "latencyMs": 5,
                "faults": [
                    {
                        "kind": "server_error",
                        "status": 503,
                        "onCalls": list(range(1, 21, 2)),
                    },
                    {"kind": "cut_stream", "onCalls": list(range(2, 21, 2))},
                ],
            }
        }
    )
    job = submit_job(http, client_a, _items(name, 40), maxAttempts=6)
    done = wait_for_job(http, client_a, job["id"], timeout_s=120)
    assert done["counts"]["PROCESSED"] == 40
    items = all_results(http, client_a, job["id"])
    assert sum(i["attempts"] - 1 for i in items) == 20
    assert all(i["result"]["text"] == f"q {i['customId']}" for i in items)
    stats = fake.stats(name)
    assert stats["statusCounts"].get("503", 0) == 10
    assert stats["requests"] == 60


def test_permanent_errors_fail_at_once_and_requeue_brings_them_back(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake, max_concurrency=4)
    fake.configure(
        {
            name: {
                "latencyMs": 5,
                "faults": [
                    {"kind": "bad_request", "onCalls": list(range(1, 7))}
                ],
            }
        }
    )
    job = submit_job(http, client_a, _items(name, 6), maxAttempts=3)
    failed = wait_for_job(http, client_a, job["id"], timeout_s=60)
    assert failed["status"] == "FAILED"
    assert failed["counts"]["FAILED"] == 6
    items = all_results(http, client_a, job["id"])
    assert all(i["attempts"] == 1 for i in items)  # no retry of a 400
    assert {i["error"]["type"] for i in items} == {"permanent"}
    assert fake.stats(name)["requests"] == 6  # one call each

    denied = http.post(
        f"/admin/jobs/{job['id']}/requeue", headers=client_a.headers
    )
    assert denied.status_code == 401
    response = http.post(
        f"/admin/jobs/{job['id']}/requeue", headers=admin_headers
    )
    assert response.status_code == 202
    assert response.json()["failedItems"] == 6
    done = wait_for_job(
        http, client_a, job["id"], until=("PROCESSED",), timeout_s=60
    )
    assert done["counts"]["PROCESSED"] == 6 and done["counts"]["FAILED"] == 0
    assert done["requeues"] == 1
    # Each item was called exactly once more: six calls, and each item
    # got its own answer (the fake echoes it) at its first new attempt.
    assert fake.stats(name)["requests"] == 12
    items = all_results(http, client_a, job["id"])
    assert [i["result"]["text"] for i in items] == [f"q {i}" for i in range(6)]
    assert all(i["attempts"] == 1 for i in items)
    again = http.post(
        f"/admin/jobs/{job['id']}/requeue", headers=admin_headers
    )
    assert again.status_code == 409


def test_cached_results_make_no_provider_call(
    http, admin_headers, fake, client_a
):
    name = fake_model(http, admin_headers, fake, {"latencyMs": 5})
    items = [
        {"model": name, "userContent": f"same {i}", "temperature": 0}
        for i in range(5)
    ] + [{"model": name, "userContent": "warm", "temperature": 0.7}]
    first = submit_job(http, client_a, items, cache=True)
    wait_for_job(http, client_a, first["id"], timeout_s=60)
    calls = fake.stats(name)["requests"]
    assert calls == 6
    second = submit_job(http, client_a, items, cache=True)
    done = wait_for_job(http, client_a, second["id"], timeout_s=60)
    results = all_results(http, client_a, second["id"])
    assert [r["result"]["cached"] for r in results] == [True] * 5 + [False]
    assert [r["result"]["text"] for r in results[:5]] == [
        f"same {i}" for i in range(5)
    ]
    assert fake.stats(name)["requests"] == calls + 1  # only temperature 0.7
    assert done["cost"] == pytest.approx(results[5]["result"]["cost"])
    uncached = submit_job(http, client_a, items[:1])
    wait_for_job(http, client_a, uncached["id"], timeout_s=60)
    assert fake.stats(name)["requests"] == calls + 2  # cache is opt-in


def test_a_small_job_is_not_starved_by_a_big_one(
    http, admin_headers, fake, client_a, client_b
):
    name = fake_model(
        http, admin_headers, fake, {"latencyMs": 40}, max_concurrency=1
    )
    big = submit_job(http, client_a, _items(name, 150))
    _wait_until_running(http, client_a, big)
    small = submit_job(http, client_b, _items(name, 5))
    wait_for_job(http, client_b, small["id"], timeout_s=60)
    state = http.get(f"/jobs/{big['id']}", headers=client_a.headers).json()
    assert state["counts"]["PROCESSED"] < 100
    http.post(f"/jobs/{big['id']}/cancel", headers=client_a.headers)


def test_higher_priority_goes_first_within_a_client(
    http, admin_headers, fake, client_a
):
    name = fake_model(
        http, admin_headers, fake, {"latencyMs": 40}, max_concurrency=1
    )
    low = submit_job(http, client_a, _items(name, 120))
    _wait_until_running(http, client_a, low)
    urgent = submit_job(http, client_a, _items(name, 5), priority=10)
    wait_for_job(http, client_a, urgent["id"], timeout_s=60)
    state = http.get(f"/jobs/{low['id']}", headers=client_a.headers).json()
    assert state["counts"]["PROCESSED"] < 60
    http.post(f"/jobs/{low['id']}/cancel", headers=client_a.headers)
