"""Items as provider requests: the request, token estimate, cache key."""

from __future__ import annotations

import hashlib
import json

from pipeline.jobs.shapes import StoredItem
from providers.base import CompletionRequest

#: Output tokens assumed for a call without ``maxTokens`` (tpm estimate).
DEFAULT_OUTPUT_TOKENS = 256


def item_request(item: StoredItem) -> CompletionRequest:
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


#: The cache scope of a model whose cache an admin shared between clients.
SHARED_CACHE_SCOPE = "shared"


def cache_key(
    scope: str,
    model: str,
    system: str | None,
    user: str,
    temperature: float | None,
    max_tokens: int | None,
) -> str:
    """The result-cache key of a request.

    Args:
        scope: Whose cache: ``client:<id>``, or :data:`SHARED_CACHE_SCOPE`
            for a model whose cache is shared. A client never reads
            another's results (nor learns what others asked).
        model: The catalog model.
        system: The system prompt.
        user: The user content.
        temperature: The temperature.
        max_tokens: The output limit.

    Returns:
        The key (a SHA-256 in hex).
    """
    payload = json.dumps(
        [scope, model, system or "", user, temperature, max_tokens],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def result_cache_key(item: StoredItem, shared: bool) -> str:
    """The result-cache key of an item (system prompt resolved).

    Args:
        item: The item (``clientId``, ``model`` and the request fields).
        shared: Whether its model's cache is shared between clients.
    """
    return cache_key(
        SHARED_CACHE_SCOPE if shared else f"client:{item['clientId']}",
        item["model"],
        item.get("systemPrompt"),
        item["userContent"],
        item.get("temperature"),
        item.get("maxTokens"),
    )
