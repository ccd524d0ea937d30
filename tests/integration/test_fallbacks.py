"""Fallbacks through the HTTP API, across two providers' workers."""

import pytest

from tests.support.api import (
    all_results,
    create_model,
    submit_job,
    wait_for_job,
)
from tests.support.fake_provider import unique_model
from tests.support.workers import worker_stats

pytestmark = pytest.mark.ray


def _items(model, n):
    return [
        {"model": model, "userContent": f"q {i}", "customId": str(i)}
        for i in range(n)
    ]


def test_a_down_models_items_are_answered_by_another_providers_model(
    http, admin_headers, fake, client_a, service_env
):
    backup = unique_model("gemini")
    down = unique_model("openai")
    create_model(http, admin_headers, fake.url, backup, provider="gemini")
    create_model(http, admin_headers, fake.url, down, fallbacks=[backup])
    fake.configure(
        {
            down: {"faults": [{"kind": "server_error", "status": 503}]},
            backup: {"latencyMs": 5},
        }
    )
    job = submit_job(http, client_a, _items(down, 30), maxAttempts=1)
    assert job["fallbacks"] is True
    done = wait_for_job(http, client_a, job["id"])
    assert done["status"] == "PROCESSED"
    assert done["counts"]["PROCESSED"] == 30
    assert done["answersByModel"] == {backup: 30}
    items = all_results(http, client_a, job["id"])
    assert [i["result"]["text"] for i in items] == [
        f"q {i}" for i in range(30)
    ]
    for item in items:
        assert item["model"] == down
        assert item["fallbackFrom"] == [down]
        assert item["result"]["servedBy"] == backup
    assert fake.stats(backup)["requests"] == 30
    # The openai worker signalled the gemini worker (the poll would
    # have found the items too, later).
    replicas = range(int(service_env["WORKER_REPLICAS"]))
    gemini = [worker_stats("gemini", r) for r in replicas]
    assert sum(s["fallbacks"]["received"] for s in gemini) == 30
    assert sum(s["fallbacks"]["signals"] for s in gemini) > 0

    forbidden = submit_job(
        http, client_a, _items(down, 3), maxAttempts=1, fallbacks=False
    )
    failed = wait_for_job(http, client_a, forbidden["id"])
    assert failed["status"] == "FAILED" and failed["fallbacks"] is False
    assert failed["answersByModel"] == {}
    assert fake.stats(backup)["requests"] == 30
