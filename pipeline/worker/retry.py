"""Retry policy as data: what to do after a failed provider call.

Transient and rate-limit errors are retried with capped exponential
backoff and full jitter, never sooner than the provider's Retry-After;
permanent and auth errors fail at once. Attempts are counted when an
item is claimed, so a worker that dies mid-call also uses one up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.backoff import backoff_s
from providers.errors import ProviderError


@dataclass(frozen=True)
class RetryDecision:
    """What to do with an item after a failed attempt.

    Attributes:
        retry: Whether to try again.
        delay_s: Seconds to wait before the next attempt.
    """

    retry: bool
    delay_s: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter.

    Attributes:
        base_delay_s: Delay scale of the first retry.
        max_delay_s: Cap of the computed delay (Retry-After may exceed
            it: the provider's word wins).
        jitter: Fraction of the delay drawn at random (0: none, 1: full
            jitter).
    """

    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    jitter: float = 1.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The computed delay after the ``attempt``-th failure (1-based)."""
        return backoff_s(
            attempt,
            self.base_delay_s,
            cap_s=self.max_delay_s,
            jitter=self.jitter,
            rng=rng,
        )

    def decide(
        self,
        error: BaseException,
        attempts: int,
        max_attempts: int,
        rng: random.Random,
    ) -> RetryDecision:
        """Decide after a failed attempt.

        Args:
            error: What the call raised.
            attempts: Attempts made so far, this one included.
            max_attempts: The item's limit.
            rng: Source of jitter.

        Returns:
            Retry (with a delay) or give up.
        """
        # Anything the adapters did not type (a bug, a surprise from an
        # SDK) is retried: after max_attempts the item fails with it kept.
        retryable = (
            error.retryable if isinstance(error, ProviderError) else True
        )
        if not retryable or attempts >= max_attempts:
            return RetryDecision(retry=False)
        delay = self.backoff(attempts, rng)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        return RetryDecision(retry=True, delay_s=delay)


def error_record(error: BaseException) -> dict[str, object]:
    """The ``error`` kept on an item: type, message, retryable, status."""
    if isinstance(error, ProviderError):
        return {
            "type": error.kind,
            "message": error.message,
            "retryable": error.retryable,
            "statusCode": error.status_code,
        }
    return {
        "type": "internal",
        "message": f"{type(error).__name__}: {error}",
        "retryable": True,
        "statusCode": None,
    }
