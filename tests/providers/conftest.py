"""Fixtures of the provider tests: one fake server, fresh adapters.

The fake provider server runs once per session in its own thread; tests
keep out of each other's way by using model ids of their own (the fake
keys behaviours and stats by model id).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from provider_helpers import FakeModel

from providers.base import LLMProvider
from providers.fake import FakeProviderServer
from providers.registry import BUILTIN_PROVIDERS, provider_class

ADAPTERS = sorted(BUILTIN_PROVIDERS)
_counter = itertools.count()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # The SDKs' transports (httpx2, aiohttp) run on asyncio.
    return "asyncio"


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as server:
        yield server


@pytest.fixture(params=ADAPTERS)
def adapter_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def provider(adapter_name: str) -> AsyncIterator[LLMProvider]:
    instance = provider_class(adapter_name)()
    yield instance
    await instance.aclose()


@pytest.fixture
def model(
    fake: FakeProviderServer, adapter_name: str, request: pytest.FixtureRequest
) -> FakeModel:
    model_id = f"{adapter_name}-{request.node.originalname}-{next(_counter)}"
    return FakeModel(fake, adapter_name, model_id)


def pytest_configure(config: pytest.Config) -> None:
    # google-genai subclasses aiohttp.ClientSession, which aiohttp frowns on.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Inheritance class AiohttpClientSession:DeprecationWarning",
    )
