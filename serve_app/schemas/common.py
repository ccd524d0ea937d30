"""Shared schema bases: camelCase aliases and strict request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A response body: snake_case in Python, camelCase in JSON."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
    )


class RequestModel(ApiModel):
    """A request body: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Page(ApiModel):
    """Offset pagination of a small collection."""

    limit: int
    offset: int


def metadata_times(document: dict[str, Any]) -> dict[str, datetime | None]:
    """``createdAt``/``updatedAt`` of a stored document."""
    metadata = document.get("_metadata") or {}
    return {
        "created_at": metadata.get("createdAt"),
        "updated_at": metadata.get("updatedAt"),
    }
