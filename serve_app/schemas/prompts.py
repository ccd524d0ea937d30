"""Bodies of the prompt endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from serve_app.schemas.common import ApiModel, RequestModel, metadata_times

MAX_PROMPT_CHARS = 200_000


class PromptWrite(RequestModel):
    """``POST /prompts`` and ``PUT /prompts/{id}`` (a new version)."""

    name: str = Field(min_length=1, max_length=200)
    system_prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    user_template: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    tags: list[str] = Field(default_factory=list, max_length=50)


class PromptOut(ApiModel):
    """One version of a prompt."""

    id: str
    name: str
    system_prompt: str
    user_template: str | None
    variables: list[str]
    tags: list[str]
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_doc(cls, document: dict[str, Any]) -> PromptOut:
        """Build from a stored prompt or prompt version."""
        return cls(
            id=str(document["_id"]),
            name=document["name"],
            system_prompt=document["systemPrompt"],
            user_template=document.get("userTemplate"),
            variables=document.get("variables") or [],
            tags=document.get("tags") or [],
            version=document["version"],
            **metadata_times(document),
        )


class PromptList(ApiModel):
    """``GET /prompts``: newest first; pass ``nextCursor`` as ``cursor``."""

    items: list[PromptOut]
    next_cursor: str | None
