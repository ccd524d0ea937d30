"""Items as provider requests: the request, token estimate, cache key."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from providers.base import CompletionRequest

#: Output tokens assumed for a call without ``maxTokens`` (tpm estimate).
DEFAULT_OUTPUT_TOKENS = 256


def item_request(item: dict[str, Any]) -> CompletionRequest:
    """The provider request of a claimed item (system prompt resolved)."""
    return CompletionRequest.from_prompts(
        item.get("systemPrompt"),
        item["userContent"],
        temperature=item.get("temperature"),
        max_tokens=item.get("maxTokens"),
    )


def estimate_tokens(
    system: str | None, user: str, max_tokens: int | None
) -> int:
    """A cheap upper-side estimate of a call's tokens (for tpm)."""
    chars = len(system or "") + len(user)
    return chars // 4 + 1 + (max_tokens or DEFAULT_OUTPUT_TOKENS)


def request_tokens(request: CompletionRequest) -> int:
    """The same estimate for a whole conversation (chat completions)."""
    chars = sum(len(m.content) for m in request.messages)
    return chars // 4 + 1 + (request.max_tokens or DEFAULT_OUTPUT_TOKENS)


def cache_key(
    model: str,
    system: str | None,
    user: str,
    temperature: float | None,
    max_tokens: int | None,
) -> str:
    """The result-cache key of a request."""
    payload = json.dumps(
        [model, system or "", user, temperature, max_tokens],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()
