"""Capped exponential backoff: the one delay formula every retry uses.

Provider retries (:class:`pipeline.worker.retry.RetryPolicy`), database
retries (:func:`pipeline.store.retry.safe_operation`) and the worker's
database steps that wait for the database to come back all draw their
delays here.
"""

from __future__ import annotations

import math
import random


def backoff_s(
    attempt: int,
    base_s: float,
    *,
    cap_s: float = math.inf,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """The delay before the next try, after the ``attempt``-th failure.

    Args:
        attempt: Failures so far (1-based).
        base_s: The delay after the first failure; it doubles after each.
        cap_s: The longest delay, before jitter.
        jitter: Fraction of the delay drawn at random: the delay is
            uniform in ``(d * (1 - jitter), d]`` (0: none, 1: full).
        rng: Source of jitter (the ``random`` module's by default).

    Returns:
        Seconds to wait.
    """
    delay = min(cap_s, base_s * 2 ** (attempt - 1))
    if jitter:
        delay *= 1 - jitter * (rng or random).random()
    return delay
