"""/v1/chat/completions with the official openai client."""

import concurrent.futures

import openai
import pytest

from tests.support.api import create_model, fake_model
from tests.support.fake_provider import unique_model
from tests.support.net import wait_until

pytestmark = pytest.mark.ray


@pytest.fixture
def chat_client(base_url, client_a):
    return openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=client_a.api_key, max_retries=0
    )


def test_completion(http, admin_headers, fake, chat_client):
    name = unique_model("anthropic")
    create_model(http, admin_headers, fake.url, name, provider="anthropic")
    fake.configure({name: {"latencyMs": 5}})
    response = chat_client.chat.completions.create(
        model=name,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there friend"},
        ],
        max_tokens=50,
    )
    assert response.choices[0].message.content == "hello there friend"
    assert response.choices[0].finish_reason == "stop"
    assert response.model == name
    assert response.usage.completion_tokens == 3
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_streaming(http, admin_headers, fake, chat_client):
    name = fake_model(
        http,
        admin_headers,
        fake,
        {"latencyMs": 5, "streamTokensPerSecond": 200},
    )
    stream = chat_client.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices
    )
    assert text == "one two three four"
    assert chunks[-1].usage.completion_tokens == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices][
        -1
    ] == "stop"


def test_chat_shares_the_model_limits(
    http, admin_headers, fake, base_url, client_a
):
    # The first two calls are held 5 s at the fake (the model's calls
    # time out at 10 s): the limit is reached while they are held, and
    # the other four wait for them.
    held = {"kind": "slow_first_byte", "onCalls": [1, 2], "delayMs": 5000}
    name = fake_model(
        http,
        admin_headers,
        fake,
        {"latencyMs": 20, "faults": [held]},
        max_concurrency=2,
    )

    def ask(i):
        client = openai.OpenAI(
            base_url=f"{base_url}/v1", api_key=client_a.api_key, max_retries=0
        )
        reply = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": f"n {i}"}]
        )
        return reply.choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        asked = pool.map(ask, range(6))
        wait_until(
            lambda: fake.stats(name)["inFlight"] == 2,
            timeout_s=30,
            what="two chat calls at the provider",
        )
        answers = list(asked)
    assert answers == [f"n {i}" for i in range(6)]
    stats = fake.stats(name)
    assert stats["maxInFlight"] == 2 and stats["requests"] == 6


def test_errors_reach_the_client_typed(http, admin_headers, fake, chat_client):
    name = fake_model(http, admin_headers, fake)
    fake.configure(
        {name: {"faults": [{"kind": "rate_limit", "retryAfter": 90}]}}
    )
    with pytest.raises(openai.RateLimitError) as error:
        chat_client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "x"}]
        )
    assert error.value.response.headers["retry-after"] == "90"
    with pytest.raises(openai.NotFoundError):
        chat_client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError):
        chat_client.chat.completions.create(model=name, messages=[])


def test_chat_needs_a_client_key(base_url):
    client = openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="msk_bad", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "x"}]
        )
