import asyncio

import pytest

from optimizer.answers import MemoryAnswerStore
from optimizer.calls import StoredModelCall, request_key
from pipeline.catalog import Pricing
from providers.base import Completion, CompletionRequest, Usage
from providers.errors import PermanentError

pytestmark = pytest.mark.anyio


class CountingStore(MemoryAnswerStore):
    def __init__(self):
        super().__init__()
        self.reads = 0

    async def get_many(self, run_id, keys):
        self.reads += 1
        return await super().get_many(run_id, keys)


class Model:
    def __init__(self, fail_on=()):
        self.calls = []
        self.fail_on = set(fail_on)

    async def __call__(self, model, request):
        text = request.messages[-1].content
        self.calls.append(text)
        await asyncio.sleep(0)
        if text in self.fail_on:
            raise PermanentError("refused", status_code=400)
        return Completion(
            text.upper(), "stop", Usage(10, 2), model, latency_ms=1.0
        )


def _request(text):
    return CompletionRequest.from_prompts("system", text, temperature=0.0)


def _call(store, model):
    pricing = {"m": Pricing(input_per_million=1.0, output_per_million=2.0)}
    return StoredModelCall("run1", store, model, pricing)


async def test_answers_are_stored_and_never_paid_twice():
    store, model = CountingStore(), Model()
    call = _call(store, model)
    first = await call("m", _request("hello"))
    assert (first.text, first.fresh) == ("HELLO", True)
    assert first.cost == pytest.approx((10 * 1.0 + 2 * 2.0) / 1e6)
    again = await _call(store, model)("m", _request("hello"))
    assert (again.text, again.fresh, again.cost) == (
        "HELLO",
        False,
        first.cost,
    )
    assert model.calls == ["hello"]


async def test_calls_started_together_share_one_read():
    store, model = CountingStore(), Model()
    call = _call(store, model)
    texts = [f"q{n}" for n in range(20)]
    answers = await asyncio.gather(*(call("m", _request(t)) for t in texts))
    assert [a.text for a in answers] == [t.upper() for t in texts]
    assert store.reads == 1


async def test_a_failed_call_is_an_answer_not_stored():
    store, model = CountingStore(), Model(fail_on={"bad"})
    call = _call(store, model)
    failed = await call("m", _request("bad"))
    assert failed.failed and failed.error.startswith("permanent")
    assert store.answers == {}
    await call("m", _request("bad"))
    assert model.calls == ["bad", "bad"]


def test_the_key_is_the_request():
    one = request_key("m", _request("a"))
    assert one == request_key("m", _request("a"))
    assert one != request_key("m", _request("b"))
    assert one != request_key("other", _request("a"))
