"""What a request will cost at most, estimated before it is sent.

A budget is checked against this estimate when work is submitted (the
real cost is known only once the model answered):

* input tokens: the prompt's characters / 4 (system prompt and user
  content), plus one;
* output tokens: ``maxTokens``, or :data:`DEFAULT_OUTPUT_TOKENS` when the
  request does not bound them;
* each priced with the model's catalog ``pricing`` (USD per million).

For English text four characters per token is close to the providers'
tokenizers; the output part is an upper bound when ``maxTokens`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.catalog import Pricing

#: Output tokens assumed for a request that does not set ``maxTokens``.
DEFAULT_OUTPUT_TOKENS = 256
#: Characters per token of the input estimate.
CHARS_PER_TOKEN = 4


def estimate_cost(
    pricing: Pricing, prompt_chars: int, max_tokens: int | None
) -> float:
    """The estimated cost of one call, in USD.

    Args:
        pricing: The model's catalog pricing.
        prompt_chars: Characters of the system prompt and user content.
        max_tokens: The request's output bound, if any.
    """
    return pricing.cost(
        prompt_chars // CHARS_PER_TOKEN + 1,
        max_tokens or DEFAULT_OUTPUT_TOKENS,
    )


def model_pricing(model: Mapping[str, Any]) -> Pricing:
    """The pricing of a catalog document (zero when it has none)."""
    return Pricing.model_validate(model.get("pricing") or {})
