"""Bodies of the model catalog endpoints."""

from __future__ import annotations

from typing import Any

from pipeline.catalog import Limits, Pricing, public_config
from serve_app.schemas.common import ApiModel


class ModelOut(ApiModel):
    """A catalog model. Clients see no endpoints; nobody sees a key."""

    name: str
    provider: str
    description: str
    limits: Limits
    pricing: Pricing
    active: bool
    simulated: bool
    shared_cache: bool
    fallbacks: list[str]
    config: dict[str, Any]

    @classmethod
    def from_doc(cls, document: dict[str, Any], *, admin: bool) -> ModelOut:
        """Build from a stored model."""
        config = document.get("config") or {}
        return cls(
            name=document["name"],
            provider=document["provider"],
            description=document.get("description") or "",
            limits=Limits.model_validate(document.get("limits") or {}),
            pricing=Pricing.model_validate(document.get("pricing") or {}),
            active=document.get("active", True),
            simulated=document.get("simulated", False),
            shared_cache=document.get("sharedCache", False),
            fallbacks=list(document.get("fallbacks") or []),
            config=dict(config) if admin else public_config(config),
        )


class ModelList(ApiModel):
    """``GET /models``."""

    items: list[ModelOut]
