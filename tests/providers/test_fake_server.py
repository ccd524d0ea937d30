"""The fake provider server itself: behaviours, faults, stats, control."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest

from providers.fake import (
    Behaviour,
    BehaviourError,
    FakeConfig,
    FakeProviderServer,
)
from providers.fake.control import NEVER_CALLED, FakeControl

pytestmark = pytest.mark.anyio


def chat_body(model: str, user: str = "hello", **extra: Any) -> dict:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "You translate."},
            {"role": "user", "content": user},
        ],
        **extra,
    }


async def post(
    session: aiohttp.ClientSession, url: str, body: dict
) -> tuple[int, Any]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json(content_type=None)


async def statuses(
    session: aiohttp.ClientSession, url: str, model: str, count: int
) -> list[int]:
    return [
        (await post(session, url, chat_body(model)))[0] for _ in range(count)
    ]


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_fixed_latency(fake: FakeProviderServer, session: Any) -> None:
    fake.configure(models={"lat-fixed": {"latencyMs": 200}})
    started = time.perf_counter()
    status, _ = await post(
        session, f"{fake.url}/v1/chat/completions", chat_body("lat-fixed")
    )
    assert status == 200
    assert time.perf_counter() - started >= 0.2


def test_latency_range_is_uniform_and_seeded() -> None:
    behaviour = Behaviour.parse({"latencyMs": {"min": 100, "max": 300}}, "b")
    first = [behaviour.latency_seconds(random.Random(1)) for _ in range(3)]
    again = [behaviour.latency_seconds(random.Random(1)) for _ in range(3)]
    assert first == again
    rng = random.Random(2)
    draws = [behaviour.latency_seconds(rng) for _ in range(200)]
    assert all(0.1 <= d <= 0.3 for d in draws)
    assert max(draws) - min(draws) > 0.1


async def test_faults_on_chosen_calls(
    fake: FakeProviderServer, session: Any
) -> None:
    faults = [
        {"kind": "rate_limit", "onCalls": [2], "retryAfter": 1},
        {"kind": "server_error", "everyN": 3, "status": 503},
    ]
    fake.configure(models={"nth": {"faults": faults}})
    url = f"{fake.url}/v1/chat/completions"
    statuses = [
        (await post(session, url, chat_body("nth")))[0] for _ in range(6)
    ]
    assert statuses == [200, 429, 503, 200, 200, 503]
    stats = fake.stats("nth")
    assert stats["statusCounts"] == {"200": 3, "429": 1, "503": 2}
    assert stats["faults"] == {"rate_limit": 1, "server_error": 2}


async def test_random_faults_repeat_with_the_seed(session: Any) -> None:
    document = {
        "seed": 11,
        "models": {"r": {"faults": [{"kind": "server_error", "rate": 0.5}]}},
    }
    patterns = []
    with FakeProviderServer(document) as server:
        url = f"{server.url}/v1/chat/completions"
        for _ in range(2):
            server.reset()
            patterns.append(
                [
                    (await post(session, url, chat_body("r")))[0]
                    for _ in range(16)
                ]
            )
        server.configure(seed=12)
        other = [
            (await post(session, url, chat_body("r")))[0] for _ in range(16)
        ]
    assert patterns[0] == patterns[1]
    assert {200, 500} == set(patterns[0])
    assert other != patterns[0]


async def test_max_in_flight_shows_the_client_limit(
    fake: FakeProviderServer, session: Any
) -> None:
    fake.configure(models={"limited": {"latencyMs": 100}})
    url = f"{fake.url}/v1/chat/completions"
    gate = asyncio.Semaphore(4)

    async def limited_call() -> int:
        async with gate:
            return (await post(session, url, chat_body("limited")))[0]

    statuses = await asyncio.gather(*(limited_call() for _ in range(20)))
    assert statuses == [200] * 20
    stats = fake.stats("limited")
    assert stats["requests"] == 20
    assert stats["maxInFlight"] == 4
    assert stats["inFlight"] == 0
    assert len(stats["timestamps"]) == 20
    assert stats["timestamps"] == sorted(stats["timestamps"])
    # Four at a time, 100 ms each: five waves.
    assert stats["timestamps"][-1] - stats["timestamps"][0] >= 0.35


async def test_stream_pacing_and_first_byte_delay(
    fake: FakeProviderServer, session: Any
) -> None:
    fake.configure(
        models={
            "paced": {
                "reply": "a b c d e",
                "streamTokensPerSecond": 20,
                "firstByteDelayMs": 100,
            }
        }
    )
    body = chat_body("paced", stream=True)
    started = time.perf_counter()
    async with session.post(
        f"{fake.url}/v1/chat/completions", json=body
    ) as response:
        headers_at = time.perf_counter() - started
        text = await response.text()
    total = time.perf_counter() - started
    assert headers_at < 0.09
    # 100 ms before the body, then five tokens at 20 per second.
    assert total >= 0.1 + 5 / 20 - 0.02
    assert text.rstrip().endswith("data: [DONE]")


async def test_answers_are_deterministic(
    fake: FakeProviderServer, session: Any
) -> None:
    rules = [
        {"match": "(?i)translate.*\\n(\\w+)", "reply": "translated \\1"},
        {"match": "shout", "reply": "LOUD"},
    ]
    fake.configure(
        models={
            "ruled": {"rules": rules, "reply": "fallback"},
            "fixed": {"reply": "always this"},
        }
    )
    url = f"{fake.url}/v1/chat/completions"

    async def answer(model: str, user: str) -> str:
        _, body = await post(session, url, chat_body(model, user))
        return body["choices"][0]["message"]["content"]

    # The system prompt ("You translate.") is part of what rules match.
    assert await answer("ruled", "bonjour tout") == "translated bonjour"
    assert await answer("fixed", "whatever") == "always this"
    assert await answer("echoed-model", "say  it   back") == "say it back"


async def test_model_behaviour_inherits_the_default() -> None:
    config = FakeConfig(
        {
            "default": {"latencyMs": 50, "reply": "d"},
            "models": {"m": {"reply": "m"}},
        }
    )
    assert config.behaviour("m").latency_ms == 50
    assert config.behaviour("m").reply == "m"
    assert config.behaviour("unknown").reply == "d"


def test_a_bad_update_changes_nothing() -> None:
    config = FakeConfig({"models": {"m": {"reply": "kept"}}})
    with pytest.raises(BehaviourError, match=r"faults\[0\]\.kind"):
        config.update(
            {
                "models": {
                    "m": {"reply": "new"},
                    "n": {"faults": [{"kind": "x"}]},
                }
            }
        )
    assert config.behaviour("m").reply == "kept"


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"models": {"m": {"latencyMs": -1}}}, "latencyMs"),
        ({"models": {"m": {"latencyMs": {"min": 5, "max": 1}}}}, "latencyMs"),
        ({"models": {"m": {"faults": [{"kind": "auth", "rate": 2}]}}}, "rate"),
        ({"models": {"m": {"rules": [{"match": "("}]}}}, "rules"),
        ({"models": {"m": {"latency": 5}}}, "latency"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_invalid_behaviour_names_the_field(document: dict, where: str) -> None:
    with pytest.raises(BehaviourError, match=where):
        FakeConfig(document)


async def test_control_endpoints_over_http(
    fake: FakeProviderServer, session: Any
) -> None:
    bad = {"models": {"ctl": {"faults": [{"kind": "nope"}]}}}
    status, body = await post(session, f"{fake.url}/_fake/config", bad)
    assert status == 400
    assert "kind" in body["error"]

    good = {"models": {"ctl": {"reply": "configured"}}}
    status, body = await post(session, f"{fake.url}/_fake/config", good)
    assert status == 200
    assert body["models"]["ctl"] == {"reply": "configured"}

    _, answer = await post(
        session, f"{fake.url}/v1/chat/completions", chat_body("ctl")
    )
    assert answer["choices"][0]["message"]["content"] == "configured"
    async with session.get(f"{fake.url}/_fake/stats") as response:
        stats = await response.json()
    assert stats["models"]["ctl"]["requests"] == 1
    assert stats["models"]["ctl"]["maxInFlight"] == 1

    status, _ = await post(session, f"{fake.url}/_fake/reset", {})
    assert status == 200
    assert fake.stats("ctl")["requests"] == 0
    async with session.get(f"{fake.url}/_fake/health") as response:
        assert response.status == 200


def test_the_control_client(fake: FakeProviderServer) -> None:
    control = FakeControl(fake.url)
    assert control.healthy()
    with pytest.raises(urllib.error.HTTPError) as refused:
        control.configure({"ctl2": {"faults": [{"kind": "nope"}]}})
    assert refused.value.code == 400
    assert control.stats("ctl2") == NEVER_CALLED

    control.configure({"ctl2": {"reply": "configured"}})
    request = urllib.request.Request(
        f"{fake.url}/v1/chat/completions",
        data=json.dumps(chat_body("ctl2")).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer = json.loads(reply.read())
    assert answer["choices"][0]["message"]["content"] == "configured"
    assert control.stats("ctl2")["requests"] == 1
    assert control.models()["ctl2"]["maxInFlight"] == 1
    control.reset()
    assert control.stats("ctl2")["requests"] == 0
    assert not FakeControl("http://127.0.0.1:9").healthy()


async def test_malformed_requests_get_the_vendors_400(
    fake: FakeProviderServer, session: Any
) -> None:
    status, body = await post(
        session,
        f"{fake.url}/v1/messages",
        {"model": "c", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 400
    assert body["type"] == "error"
    assert "max_tokens" in body["error"]["message"]

    status, body = await post(
        session,
        f"{fake.url}/openai/deployments/d/chat/completions",
        chat_body("d"),
    )
    assert status == 400
    assert "api-version" in body["error"]["message"]


async def test_a_wrong_key_gets_the_vendors_auth_error(
    fake: FakeProviderServer, session: Any
) -> None:
    fake.configure(models={"keyed": {"apiKey": "right"}})
    url = f"{fake.url}/v1/chat/completions"
    async with session.post(
        url, json=chat_body("keyed"), headers={"Authorization": "Bearer no"}
    ) as response:
        assert response.status == 401
    async with session.post(
        url, json=chat_body("keyed"), headers={"Authorization": "Bearer right"}
    ) as response:
        assert response.status == 200
