"""Cutting requests into provider batches within the vendor's limits.

Each vendor caps a batch by request count and by payload bytes (OpenAI:
50,000 requests and a 200 MB input file; Anthropic: 100,000 and 256 MB;
Gemini inline: 20 MB). :func:`split_requests` fills batches in order,
starting a new one when the next request would break either cap. Pure
logic: the size of a request is the caller's function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The most one provider batch may hold.

    Attributes:
        max_requests: Requests per batch.
        max_bytes: Bytes of the batch's payload (input file or body).
    """

    max_requests: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError("batch limits must be positive")


def split_requests(
    requests: Sequence[T], limits: BatchLimits, size: Callable[[T], int]
) -> list[list[T]]:
    """Group requests, in order, into batches within the limits.

    Args:
        requests: The requests.
        limits: The vendor's caps.
        size: The bytes one request adds to a batch's payload.

    Returns:
        The groups (none for no requests); joined, they are ``requests``.

    Raises:
        ValueError: One request alone is larger than ``max_bytes``.
    """
    groups: list[list[T]] = []
    current: list[T] = []
    used = 0
    for index, request in enumerate(requests):
        needed = size(request)
        if needed > limits.max_bytes:
            raise ValueError(
                f"request {index} takes {needed} bytes, more than a batch "
                f"holds ({limits.max_bytes})"
            )
        full = len(current) >= limits.max_requests
        if current and (full or used + needed > limits.max_bytes):
            groups.append(current)
            current, used = [], 0
        current.append(request)
        used += needed
    if current:
        groups.append(current)
    return groups
