"""What only some adapters do, checked against the fake server."""

from __future__ import annotations

import pytest
from provider_helpers import FakeModel

from providers.base import CompletionRequest, TextDelta
from providers.fake import FakeProviderServer
from providers.registry import provider_class

pytestmark = pytest.mark.anyio

REQUEST = CompletionRequest.from_prompts("sys", "hello fake world")


async def test_azure_foundry_v1_endpoint(fake: FakeProviderServer) -> None:
    model = FakeModel(fake, "azure_openai", "foundry-gpt").behave(
        reply="from v1"
    )
    config = {
        "endpoint": fake.url,
        "apiVersion": "v1",
        "modelId": model.id,
        "auth": "none",
    }
    provider = provider_class("azure_openai")()
    try:
        completion = await provider.complete(config, REQUEST, None)
        assert completion.text == "from v1"
        events = [e async for e in provider.stream(config, REQUEST, None)]
        streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert streamed.strip() == "from v1"
        assert model.stats()["requests"] == 2
    finally:
        await provider.aclose()


async def test_openai_compatible_server_with_max_tokens(
    fake: FakeProviderServer,
) -> None:
    model = FakeModel(fake, "openai", "local-llama").behave(reply="a b c d")
    config = model.config(maxTokensParam="max_tokens")
    provider = provider_class("openai")()
    try:
        request = CompletionRequest.from_prompts(None, "x", max_tokens=3)
        completion = await provider.complete(config, request, None)
        assert completion.text == "a b c"
        assert completion.finish_reason == "length"
    finally:
        await provider.aclose()


async def test_anthropic_pinned_legacy_version_still_works(
    fake: FakeProviderServer,
) -> None:
    model = FakeModel(fake, "anthropic", "claude-legacy").behave(reply="ok")
    config = model.config(apiVersion="2023-06-01")
    provider = provider_class("anthropic")()
    try:
        request = CompletionRequest.from_prompts("s", "u", temperature=0.0)
        assert (await provider.complete(config, request, None)).text == "ok"
    finally:
        await provider.aclose()


async def test_one_client_serves_many_calls(fake: FakeProviderServer) -> None:
    model = FakeModel(fake, "openai", "reuse")
    provider = provider_class("openai")()
    try:
        for _ in range(3):
            await provider.complete(model.config(), REQUEST, None)
        await provider.complete(model.config(), REQUEST, None)
        loop_clients = list(provider._clients._by_loop.values())  # type: ignore[attr-defined]
        assert [len(clients) for clients in loop_clients] == [1]
    finally:
        await provider.aclose()
