"""The models a worker serves: catalog entry, limits, pricing, key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.catalog import Pricing
from pipeline.worker.limits import Share


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
