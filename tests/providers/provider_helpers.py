"""Helpers shared by the provider tests (importable: conftest is not)."""

from __future__ import annotations

from typing import Any

from providers.fake import FakeProviderServer, fake_model_config


class FakeModel:
    """A model id of the test's own on the fake server, and its config."""

    def __init__(
        self, fake: FakeProviderServer, adapter: str, model_id: str
    ) -> None:
        self.fake = fake
        self.adapter = adapter
        self.id = model_id

    def behave(self, **behaviour: Any) -> FakeModel:
        self.fake.configure(models={self.id: behaviour})
        return self

    def config(self, **extra: Any) -> dict[str, Any]:
        return fake_model_config(self.adapter, self.id, self.fake.url, **extra)

    def stats(self) -> dict[str, Any]:
        return self.fake.stats(self.id)
