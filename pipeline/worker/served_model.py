"""The models a worker serves: catalog entry, limits, pricing, key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.catalog import ModelCatalog, Pricing, key_variable_policy
from pipeline.settings import Settings
from pipeline.worker.limits import ModelLimiter, Share
from providers.errors import ProviderError


@dataclass
class ServedModel:
    """One catalog model as its provider's worker uses it.

    Attributes:
        name: The catalog name clients use.
        config: Provider config.
        max_concurrency: Cluster-wide in-flight limit.
        rpm: Cluster-wide requests per minute (None: unlimited).
        tpm: Cluster-wide tokens per minute (None: unlimited).
        pricing: USD per million tokens.
        api_key: The key read from this process's environment, or None.
        key_error: Why no key could be read (the variable to set).
        shared_cache: Whether clients share the model's result cache
            (an admin's explicit choice; per client otherwise).
    """

    name: str
    config: dict[str, Any]
    max_concurrency: int
    rpm: int | None
    tpm: int | None
    pricing: Pricing
    api_key: str | None
    key_error: Exception | None = None
    shared_cache: bool = False

    def __repr__(self) -> str:
        return f"ServedModel({self.name!r})"

    @property
    def limits(self) -> dict[str, Any]:
        """The limits as reported to the coordinator."""
        return {
            "maxConcurrency": self.max_concurrency,
            "rpm": self.rpm,
            "tpm": self.tpm,
        }

    @property
    def full_share(self) -> Share:
        """The whole of the model's limits."""
        return Share(self.max_concurrency, self.rpm, self.tpm)


class ServedModels:
    """One provider's catalog models a worker serves, and their limiters.

    Read from the catalog at start and at every poll (or when a job names
    a model not seen yet). A model's limiter outlives a refresh: its share
    and calls in flight carry over.
    """

    def __init__(
        self, provider: str, catalog: ModelCatalog, settings: Settings
    ) -> None:
        self.provider = provider
        self._catalog = catalog
        self._settings = settings
        self.models: dict[str, ServedModel] = {}
        self.limiters: dict[str, ModelLimiter] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def lease_seconds(self, model: str) -> float:
        """How long a claim of ``model``'s items leases them.

        Long enough for two timed-out calls and a margin: a call never
        outlives the lease of its item.
        """
        timeout = float(self.models[model].config.get("timeoutSeconds", 120))
        return max(self._settings.lease_seconds, 2 * timeout + 30)

    async def refresh(self) -> None:
        """Read this provider's active models (and their keys) again."""
        from providers.keys import resolve_api_key

        key_policy = key_variable_policy(self._settings)
        served: dict[str, ServedModel] = {}
        for doc in await self._catalog.list(active_only=True):
            if doc["provider"] != self.provider:
                continue
            limits = doc.get("limits") or {}
            key: str | None = None
            key_error: Exception | None = None
            try:
                key = resolve_api_key(
                    doc["name"], doc.get("config") or {}, policy=key_policy
                )
            except ProviderError as error:
                key_error = error
            served[doc["name"]] = ServedModel(
                name=doc["name"],
                config=doc.get("config") or {},
                max_concurrency=limits.get("maxConcurrency")
                or self._settings.num_llm_workers,
                rpm=limits.get("rpm"),
                tpm=limits.get("tpm"),
                pricing=Pricing.model_validate(doc.get("pricing") or {}),
                api_key=key,
                key_error=key_error,
                shared_cache=bool(doc.get("sharedCache", False)),
            )
        for name in served:
            if name not in self.limiters:
                self.limiters[name] = ModelLimiter(Share(0))
        self.models = served
