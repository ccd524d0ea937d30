"""The batch clients, end to end: the real SDKs against the fake server.

The same tests run for every provider with a batch API. Batches are
waited for by polling their status, as the pipeline will.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from providers.base import Completion, CompletionRequest
from providers.batch import (
    BatchClient,
    BatchLimits,
    BatchRequest,
    BatchStatus,
    LineError,
    ProviderBatchRef,
    batch_client,
    has_batch_api,
)
from providers.errors import (
    AuthenticationError,
    PermanentError,
    RateLimitError,
    TransientError,
)
from providers.fake import FakeProviderServer, fake_model_config

pytestmark = pytest.mark.anyio
BATCH_PROVIDERS = ["anthropic", "azure_openai", "gemini", "openai"]
_ids = itertools.count()
_WAIT_SECONDS = 60.0


@pytest.fixture(params=BATCH_PROVIDERS)
async def client(
    request: pytest.FixtureRequest,
) -> AsyncIterator[BatchClient[Any, Any]]:
    built = batch_client(request.param)
    assert built is not None
    yield built
    await built.aclose()


class Model:
    """A model of the test's own on the fake, and its batch client."""

    def __init__(
        self, fake: FakeProviderServer, client: BatchClient[Any, Any]
    ) -> None:
        self.fake = fake
        self.client = client
        self.id = f"bc-{client.provider}-{next(_ids)}"
        self.config = fake_model_config(client.provider, self.id, fake.url)

    def behave(self, **behaviour: Any) -> Model:
        self.fake.configure(models={self.id: behaviour})
        return self

    async def submit(self, requests: list[BatchRequest]) -> ProviderBatchRef:
        return await self.client.submit(self.config, None, requests)

    async def wait(self, ref: ProviderBatchRef) -> BatchStatus:
        async with asyncio.timeout(_WAIT_SECONDS):
            while True:
                status = await self.client.poll(self.config, None, ref)
                if status.ended:
                    return status
                await asyncio.sleep(0.02)

    async def results(
        self, ref: ProviderBatchRef
    ) -> dict[str, Completion | LineError]:
        outcomes: dict[str, Completion | LineError] = {}
        async for custom_id, outcome in self.client.results(
            self.config, None, ref
        ):
            assert custom_id not in outcomes
            outcomes[custom_id] = outcome
        return outcomes


def requests(count: int, **options: Any) -> list[BatchRequest]:
    return [
        BatchRequest(
            f"item-{i}",
            CompletionRequest.from_prompts(
                "Answer briefly.", f"echo number {i}", **options
            ),
        )
        for i in range(count)
    ]


async def test_answers_and_line_errors_map_back_by_custom_id(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(
        batch={
            "durationMs": 100,
            "lineErrors": {"customIds": ["item-1"], "status": 429},
        }
    )
    ref = await model.submit(requests(3))
    status = await model.wait(ref)
    assert status.state == "completed"
    outcomes = await model.results(ref)
    assert set(outcomes) == {"item-0", "item-1", "item-2"}
    answer = outcomes["item-2"]
    assert isinstance(answer, Completion)
    assert answer.text == "echo number 2"
    # The fake counts the system text too: "Answer briefly." + 3 words.
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (5, 3)
    assert answer.finish_reason == "stop"
    failed = outcomes["item-1"]
    assert isinstance(failed, LineError) and failed.ran
    assert isinstance(failed.error, RateLimitError)
    assert failed.error.provider == client.provider
    assert failed.error.model == model.id


async def test_request_options_reach_the_lines(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(
        reply="one two three four five", batch={"durationMs": 20}
    )
    ref = await model.submit(requests(1, max_tokens=2, temperature=0.0))
    await model.wait(ref)
    answer = (await model.results(ref))["item-0"]
    assert isinstance(answer, Completion)
    assert (answer.text, answer.finish_reason) == ("one two", "length")


async def test_a_bad_request_line_is_a_permanent_error(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(
        batch={
            "durationMs": 20,
            "lineErrors": {"customIds": ["item-0"], "status": 400},
        }
    )
    ref = await model.submit(requests(2))
    await model.wait(ref)
    outcomes = await model.results(ref)
    failed = outcomes["item-0"]
    assert isinstance(failed, LineError)
    assert isinstance(failed.error, PermanentError)
    assert isinstance(outcomes["item-1"], Completion)


async def test_an_expired_batch_keeps_what_ran(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(
        batch={"durationMs": 50, "outcome": "expired", "finishedFraction": 0.5}
    )
    ref = await model.submit(requests(20))
    status = await model.wait(ref)
    assert status.state == "expired"
    outcomes = await model.results(ref)
    answered = {k for k, v in outcomes.items() if isinstance(v, Completion)}
    not_run = {k for k, v in outcomes.items() if isinstance(v, LineError)}
    assert all(not outcomes[k].ran for k in not_run)  # type: ignore[union-attr]
    assert len(answered) < 20
    assert answered.isdisjoint(not_run)
    if client.provider != "gemini":
        # Gemini gives no output for a batch that did not succeed.
        assert answered and answered | not_run == {
            f"item-{i}" for i in range(20)
        }


async def test_a_failed_batch_answers_nothing(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(
        batch={"durationMs": 20, "outcome": "failed"}
    )
    ref = await model.submit(requests(3))
    status = await model.wait(ref)
    outcomes = await model.results(ref)
    assert not any(isinstance(v, Completion) for v in outcomes.values())
    if client.provider == "anthropic":
        # Anthropic has no failed batches: every line errs instead.
        assert status.state == "completed" and status.failed == 3
        assert all(isinstance(v, LineError) for v in outcomes.values())
    else:
        assert status.state == "failed"


async def test_cancel_ends_the_batch_before_its_lines_run(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(batch={"durationMs": 600_000})
    ref = await model.submit(requests(3))
    assert not (await client.poll(model.config, None, ref)).ended
    await client.cancel(model.config, None, ref)
    status = await model.wait(ref)
    assert status.state == "cancelled"
    outcomes = await model.results(ref)
    assert all(
        isinstance(v, LineError) and not v.ran for v in outcomes.values()
    )
    assert fake.batch_stats()[client.provider]["cancels"] >= 1


async def test_a_stored_reference_resumes_polling_in_a_new_client(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(batch={"durationMs": 50})
    ref = await model.submit(requests(2))
    stored = ref.to_doc()
    before = fake.batch_stats()[client.provider]["creates"]
    successor = batch_client(client.provider)
    assert successor is not None
    try:
        resumed = Model(fake, successor)
        resumed.id, resumed.config = model.id, model.config
        again = ProviderBatchRef.from_doc(stored)
        assert again == ref
        assert (await resumed.wait(again)).state == "completed"
        outcomes = await resumed.results(again)
    finally:
        await successor.aclose()
    assert all(isinstance(v, Completion) for v in outcomes.values())
    assert len(outcomes) == 2
    # Resuming created nothing new at the provider.
    assert fake.batch_stats()[client.provider]["creates"] == before


async def test_a_labelled_batch_is_found_after_a_lost_answer(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(batch={"durationMs": 600_000})
    since = datetime.now(UTC) - timedelta(seconds=5)
    if not client.can_find:
        with pytest.raises(NotImplementedError):
            await client.find(model.config, None, "x", since=since)
        return
    label = f"record-{next(_ids)}"
    ref = await client.submit(model.config, None, requests(2), label=label)
    await client.submit(model.config, None, requests(1), label="another")
    found = await client.find(
        model.config, None, label, since=since, line_ids=ref.line_ids
    )
    assert found == ref
    missing = await client.find(
        model.config, None, "never-submitted", since=since
    )
    assert missing is None
    assert fake.batch_stats()[client.provider]["lists"] >= 2


async def test_the_batches_of_a_window_are_listed_newest_first(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    model = Model(fake, client).behave(batch={"durationMs": 600_000})
    since = datetime.now(UTC) - timedelta(seconds=5)
    until = datetime.now(UTC) + timedelta(minutes=5)
    if not client.can_list:
        with pytest.raises(NotImplementedError):
            await client.created_between(model.config, None, since, until)
        return
    older = await model.submit(requests(2))
    newer = await model.submit(requests(3))
    listed = await client.created_between(model.config, None, since, until)
    mine = [b for b in listed if b.ref in (older, newer)]
    assert [b.ref for b in mine] == [newer, older]
    assert [b.status.total for b in mine] == [3, 2]
    assert {b.status.state for b in mine} == {"running"}
    assert all(since <= b.created_at <= until for b in listed)
    later = await client.created_between(
        model.config, None, until, until + timedelta(minutes=1)
    )
    assert later == []


async def test_gemini_sends_a_large_batch_as_an_uploaded_file(
    fake: FakeProviderServer,
) -> None:
    client = batch_client("gemini")
    assert client is not None
    client.inline_max_bytes = 0  # type: ignore[attr-defined]
    try:
        model = Model(fake, client).behave(
            batch={
                "durationMs": 30,
                "lineErrors": {"customIds": ["item-1"], "status": 503},
            }
        )
        before = fake.batch_stats().get("gemini", {})
        ref = await model.submit(requests(3, max_tokens=2))
        assert (await model.wait(ref)).state == "completed"
        outcomes = await model.results(ref)
    finally:
        await client.aclose()
    answer = outcomes["item-2"]
    assert isinstance(answer, Completion)
    assert (answer.text, answer.finish_reason) == ("echo number", "length")
    failed = outcomes["item-1"]
    assert isinstance(failed, LineError)
    assert isinstance(failed.error, TransientError) and failed.ran
    after = fake.batch_stats()["gemini"]
    assert after["files"] - before.get("files", 0) == 1
    assert after["downloads"] - before.get("downloads", 0) == 1


async def test_split_requests_fit_the_limits_and_all_come_back(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    small = batch_client(client.provider, BatchLimits(2, 10**6))
    assert small is not None
    try:
        model = Model(fake, small).behave(batch={"durationMs": 20})
        work = requests(5)
        groups = small.split(model.config, work)
        assert [len(g) for g in groups] == [2, 2, 1]
        with pytest.raises(ValueError, match="split them first"):
            await model.submit(work)
        outcomes: dict[str, Any] = {}
        for group in groups:
            ref = await model.submit(group)
            await model.wait(ref)
            outcomes.update(await model.results(ref))
    finally:
        await small.aclose()
    assert sorted(outcomes) == sorted(r.custom_id for r in work)
    assert all(isinstance(v, Completion) for v in outcomes.values())


async def test_split_by_bytes_counts_the_vendor_payload(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    config = fake_model_config(client.provider, "m", fake.url)
    work = requests(6)
    sizes = [
        client.line_size(client.adapter.parse_settings(config), r)
        for r in work
    ]
    assert all(size > 20 for size in sizes)
    limited = batch_client(client.provider, BatchLimits(1000, 2 * max(sizes)))
    assert limited is not None
    groups = limited.split(config, work)
    assert [len(g) for g in groups] == [2, 2, 2]
    too_small = batch_client(client.provider, BatchLimits(10, min(sizes) - 1))
    assert too_small is not None
    with pytest.raises(ValueError, match="more than a batch holds"):
        too_small.split(config, work)


async def test_custom_ids_must_suit_every_vendor(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    config = fake_model_config(client.provider, "m", fake.url)
    request = CompletionRequest.from_prompts(None, "hi")
    with pytest.raises(ValueError, match="letters, digits"):
        client.split(config, [BatchRequest("has space", request)])
    with pytest.raises(ValueError, match="repeats"):
        client.split(
            config, [BatchRequest("a", request), BatchRequest("a", request)]
        )


async def test_a_missing_key_fails_before_any_call(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    config = fake_model_config(client.provider, "m", fake.url, auth="key")
    with pytest.raises(AuthenticationError):
        await client.submit(config, None, requests(1))


async def test_an_unknown_batch_is_a_typed_error(
    fake: FakeProviderServer, client: BatchClient[Any, Any]
) -> None:
    config = fake_model_config(client.provider, "m", fake.url)
    missing = "batches/nope" if client.provider == "gemini" else "nope"
    with pytest.raises(PermanentError):
        await client.poll(
            config, None, ProviderBatchRef(client.provider, missing)
        )


def test_azure_inference_has_no_batch_api() -> None:
    assert batch_client("azure_inference") is None
    assert not has_batch_api("azure_inference")
    assert all(has_batch_api(name) for name in BATCH_PROVIDERS)
