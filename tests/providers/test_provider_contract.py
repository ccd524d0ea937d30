"""The contract every adapter meets, run against all five.

Each test drives the real vendor SDK over HTTP against the fake provider
server: nothing in the SDKs is patched.
"""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest
from provider_helpers import FakeModel

from providers.base import (
    Completion,
    CompletionRequest,
    LLMProvider,
    TextDelta,
)
from providers.errors import (
    AuthenticationError,
    ContentFilterError,
    PermanentError,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    StreamError,
    TransientError,
)
from providers.fake import fake_model_config
from tests.support.net import free_port, wait_until_async

pytestmark = pytest.mark.anyio

SYSTEM = "You are terse."
REQUEST = CompletionRequest.from_prompts(SYSTEM, "name three colours please")
MODES = ["complete", "stream"]
# Anthropic has no refusal error: a refused prompt is an ordinary answer
# with stop_reason "refusal", which the contract returns as a completion.
REFUSAL_IS_AN_ANSWER = {"anthropic"}


async def stream_all(
    provider: LLMProvider,
    config: dict,
    request: CompletionRequest = REQUEST,
) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    final: list[Completion] = []
    async for event in provider.stream(config, request, None):
        if isinstance(event, TextDelta):
            assert not final, "a delta came after the completion"
            deltas.append(event.text)
        else:
            final.append(event)
    assert len(final) == 1, "a stream ends with exactly one completion"
    return deltas, final[0]


async def run(
    provider: LLMProvider,
    config: dict,
    mode: str,
    request: CompletionRequest = REQUEST,
) -> Completion:
    if mode == "complete":
        return await provider.complete(config, request, None)
    _, completion = await stream_all(provider, config, request)
    return completion


def assert_pickles(error: ProviderError) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert clone.message == error.message
    assert clone._fields() == error._fields()


async def test_complete_returns_text_usage_and_metadata(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(reply="red green blue")
    completion = await provider.complete(model.config(), REQUEST, None)
    assert completion.text == "red green blue"
    assert completion.finish_reason == "stop"
    # The fake counts whitespace-separated words: 3 system + 4 user.
    assert completion.usage.input_tokens == 7
    assert completion.usage.output_tokens == 3
    assert completion.usage.total_tokens == 10
    assert completion.model == model.id
    assert completion.response_id
    assert completion.latency_ms > 0


async def test_stream_deltas_join_to_the_text(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(reply="one two three four five")
    deltas, completion = await stream_all(provider, model.config())
    assert len(deltas) == 5
    assert "".join(deltas) == completion.text == "one two three four five"
    assert completion.finish_reason == "stop"
    assert completion.model == model.id
    assert completion.response_id


async def test_stream_reports_the_same_usage_as_complete(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(reply="alpha beta gamma delta")
    whole = await provider.complete(model.config(), REQUEST, None)
    _, streamed = await stream_all(provider, model.config())
    assert streamed.usage == whole.usage
    assert streamed.usage.input_tokens == 7
    assert streamed.usage.output_tokens == 4


async def test_echo_of_a_multi_turn_conversation(
    provider: LLMProvider, model: FakeModel
) -> None:
    request = CompletionRequest.from_prompts(None, "first")
    request = CompletionRequest(
        (
            *request.messages,
            *CompletionRequest.from_prompts("be brief", "x").messages[:1],
        )
    )
    completion = await provider.complete(model.config(), request, None)
    assert completion.text == "first"


@pytest.mark.parametrize("mode", MODES)
async def test_max_tokens_cuts_with_finish_reason_length(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(reply="a b c d e f")
    request = CompletionRequest.from_prompts(None, "go", max_tokens=2)
    completion = await run(provider, model.config(), mode, request)
    assert completion.text == "a b"
    assert completion.finish_reason == "length"
    assert completion.usage.output_tokens == 2


@pytest.mark.parametrize("mode", MODES)
async def test_rate_limit_carries_retry_after(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(faults=[{"kind": "rate_limit", "retryAfter": 2}])
    with pytest.raises(RateLimitError) as caught:
        await run(provider, model.config(), mode)
    assert caught.value.retry_after == 2.0
    assert caught.value.status_code == 429
    assert caught.value.provider == provider.name
    assert caught.value.model == model.id
    assert_pickles(caught.value)


@pytest.mark.parametrize("mode", MODES)
async def test_retry_after_ms_wins_over_retry_after(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(
        faults=[{"kind": "rate_limit", "retryAfter": 3, "retryAfterMs": 1500}]
    )
    with pytest.raises(RateLimitError) as caught:
        await run(provider, model.config(), mode)
    assert caught.value.retry_after == 1.5


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("mode", MODES)
async def test_server_errors_are_transient(
    provider: LLMProvider, model: FakeModel, mode: str, status: int
) -> None:
    model.behave(faults=[{"kind": "server_error", "status": status}])
    with pytest.raises(TransientError) as caught:
        await run(provider, model.config(), mode)
    # An HTTP error before any body is not a broken stream.
    assert not isinstance(caught.value, StreamError)
    assert caught.value.status_code == status
    assert_pickles(caught.value)


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_retries_are_off(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(faults=[{"kind": "server_error", "status": 503}])
    with pytest.raises(TransientError):
        await run(provider, model.config(), mode)
    assert model.stats()["requests"] == 1


async def test_connection_cut_mid_body_is_transient(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(faults=[{"kind": "cut_stream"}])
    with pytest.raises(TransientError):
        await provider.complete(model.config(), REQUEST, None)


@pytest.mark.parametrize("mode", MODES)
async def test_refused_connection_is_transient_not_a_timeout(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    config = fake_model_config(model.adapter, model.id, nobody)
    with pytest.raises(TransientError) as caught:
        await run(provider, config, mode)
    assert not isinstance(caught.value, ProviderTimeout | StreamError)
    assert_pickles(caught.value)


async def test_cut_stream_is_a_stream_error(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(reply="w1 w2 w3 w4 w5 w6", faults=[{"kind": "cut_stream"}])
    with pytest.raises(StreamError) as caught:
        await stream_all(provider, model.config())
    assert_pickles(caught.value)


async def test_stream_without_end_marker_is_a_stream_error(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(faults=[{"kind": "no_end_marker"}])
    with pytest.raises(StreamError):
        await stream_all(provider, model.config())


async def test_error_event_inside_a_stream_is_a_stream_error(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(reply="w1 w2 w3 w4", faults=[{"kind": "stream_error"}])
    with pytest.raises(StreamError):
        await stream_all(provider, model.config())


async def test_rate_limit_event_inside_a_stream_is_a_rate_limit(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(
        reply="w1 w2 w3 w4", faults=[{"kind": "stream_error", "status": 429}]
    )
    with pytest.raises(RateLimitError):
        await stream_all(provider, model.config())


@pytest.mark.parametrize("mode", MODES)
async def test_bad_request_is_permanent(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(faults=[{"kind": "bad_request"}])
    with pytest.raises(PermanentError) as caught:
        await run(provider, model.config(), mode)
    assert not isinstance(caught.value, ContentFilterError)
    assert caught.value.status_code == 400
    assert not caught.value.retryable


@pytest.mark.parametrize("mode", MODES)
async def test_refused_prompt(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(faults=[{"kind": "content_filter", "stage": "prompt"}])
    if provider.name in REFUSAL_IS_AN_ANSWER:
        completion = await run(provider, model.config(), mode)
        assert completion.finish_reason == "content_filter"
        assert completion.text == ""
        return
    with pytest.raises(ContentFilterError) as caught:
        await run(provider, model.config(), mode)
    assert_pickles(caught.value)


@pytest.mark.parametrize("mode", MODES)
async def test_filtered_answer_is_a_completion(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(
        reply="one two three four",
        faults=[{"kind": "content_filter", "stage": "answer"}],
    )
    completion = await run(provider, model.config(), mode)
    assert completion.finish_reason == "content_filter"
    assert completion.text == "one two"


@pytest.mark.parametrize("mode", MODES)
async def test_rejected_key_is_an_auth_error(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(faults=[{"kind": "auth"}])
    with pytest.raises(AuthenticationError) as caught:
        await run(provider, model.config(), mode)
    assert not caught.value.retryable
    assert_pickles(caught.value)


async def test_the_key_reaches_the_vendor_and_never_the_error(
    provider: LLMProvider, model: FakeModel
) -> None:
    secret = "sk-test-0123456789abcdef"
    model.behave(apiKey=secret)
    config = model.config(auth="key")
    completion = await provider.complete(config, REQUEST, secret)
    assert completion.text
    with pytest.raises(AuthenticationError) as caught:
        await provider.complete(config, REQUEST, "sk-wrong-key-000000000")
    assert "sk-wrong" not in str(caught.value)
    assert "sk-wrong" not in repr(caught.value)


async def test_missing_key_fails_before_any_request(
    provider: LLMProvider, model: FakeModel
) -> None:
    with pytest.raises(AuthenticationError):
        await provider.complete(model.config(auth="key"), REQUEST, None)
    assert model.stats()["requests"] == 0


@pytest.mark.parametrize("mode", MODES)
async def test_timeout(
    provider: LLMProvider, model: FakeModel, mode: str
) -> None:
    model.behave(latencyMs=600_000)
    started = time.perf_counter()
    with pytest.raises(ProviderTimeout) as caught:
        await run(provider, model.config(timeoutSeconds=0.3), mode)
    # The model's own deadline, not the default (far longer): the bound
    # leaves room for a loaded machine.
    assert time.perf_counter() - started < 15
    assert caught.value.retryable
    assert_pickles(caught.value)


async def test_a_stream_that_stalls_times_out(
    provider: LLMProvider, model: FakeModel
) -> None:
    # Headers arrive at once, the body never: the deadline still holds.
    model.behave(faults=[{"kind": "slow_first_byte", "delayMs": 5000}])
    with pytest.raises(ProviderTimeout):
        await stream_all(provider, model.config(timeoutSeconds=0.3))


async def test_cancelling_a_call_propagates_and_closes_the_connection(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(latencyMs=5000)
    task = asyncio.create_task(
        provider.complete(model.config(), REQUEST, None)
    )
    await wait_until_async(
        lambda: model.stats()["inFlight"] == 1, what="the call to arrive"
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until_async(
        lambda: model.stats()["inFlight"] == 0, what="the server to see it go"
    )
    assert model.stats()["disconnects"] == 1


async def test_cancelling_a_stream_mid_answer(
    provider: LLMProvider, model: FakeModel
) -> None:
    model.behave(reply="a b c d e f g h i j", streamTokensPerSecond=10)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(model.config(), REQUEST, None):
            if isinstance(event, TextDelta):
                first_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until_async(
        lambda: model.stats()["inFlight"] == 0, what="the server to see it go"
    )
    assert model.stats()["disconnects"] == 1


async def test_concurrent_calls_all_reach_the_server_at_once(
    provider: LLMProvider, model: FakeModel
) -> None:
    # Calls that last until cancelled: all eight must be at the server
    # together (the client does not queue them).
    model.behave(latencyMs=600_000)
    config = model.config()
    calls = [
        asyncio.create_task(provider.complete(config, REQUEST, None))
        for _ in range(8)
    ]
    await wait_until_async(
        lambda: model.stats()["inFlight"] == 8, what="8 calls in flight"
    )
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    await wait_until_async(
        lambda: model.stats()["inFlight"] == 0, what="the calls to end"
    )
    stats = model.stats()
    assert stats["requests"] == 8
    assert stats["maxInFlight"] == 8
    assert stats["disconnects"] == 8
