"""A model's limits inside one worker: concurrency, rpm and tpm.

:class:`ModelLimiter` is what a worker consults before every call. Its
capacity is this worker's *share* of the model's cluster-wide limits,
handed out by the :class:`~pipeline.worker.coordinator.LimitsCoordinator`
so the sum over all workers never exceeds the model's limits. On a 429
it halves its effective concurrency, then recovers one step per quiet
interval (additive increase, multiplicative decrease).

A call reserves its estimated tokens when it starts (a
:class:`Reservation`, at most one minute of the share's tpm, so no single
request can hold the model longer) and settles them when it ends: what
the provider reported is charged, and a call that failed gives its
whole reservation back.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds of rate a token bucket may hold: bounds bursts, so moving a
#: share between workers cannot overshoot the per-minute limit by more.
BURST_S = 1.0

#: Quiet seconds after which a throttled model gains one slot back.
RECOVERY_INTERVAL_S = 2.0


class TokenBucket:
    """A token bucket refilled continuously (a per-minute rate)."""

    def __init__(
        self, per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._rate_s = per_minute / 60.0
        self._capacity = max(1.0, self._rate_s * BURST_S)
        self._tokens = 0.0
        self._updated = clock()

    def set_rate(self, per_minute: float) -> None:
        """Change the rate; tokens held are kept up to the new capacity."""
        self._refill()
        self._rate_s = per_minute / 60.0
        self._capacity = max(1.0, self._rate_s * BURST_S)
        self._tokens = min(self._tokens, self._capacity)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(
            self._capacity, self._tokens + (now - self._updated) * self._rate_s
        )
        self._updated = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` tokens are there (0: now)."""
        self._refill()
        # A cost above the capacity could never fit: it waits for a full
        # bucket and then drives the balance negative (debt).
        needed = min(amount, self._capacity) - self._tokens
        if needed <= 0:
            return 0.0
        if self._rate_s <= 0:
            return math.inf
        return needed / self._rate_s

    def take(self, amount: float) -> None:
        """Spend tokens (the balance may go negative: debt is repaid)."""
        self._refill()
        self._tokens -= amount

    def give_back(self, amount: float) -> None:
        """Return tokens estimated too high."""
        self._refill()
        self._tokens = min(self._capacity, self._tokens + amount)


@dataclass(frozen=True)
class Reservation:
    """What one started call holds until it finishes.

    Attributes:
        tokens: Tokens taken from the tpm budget at the start (0 when
            tpm is unlimited).
    """

    tokens: int


@dataclass(frozen=True)
class Share:
    """This worker's part of a model's cluster-wide limits.

    ``None`` rates mean unlimited.
    """

    concurrency: int
    rpm: float | None = None
    tpm: float | None = None


class ModelLimiter:
    """Admission control for one model in one worker."""

    def __init__(
        self,
        share: Share,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.share = share
        self.in_flight = 0
        self._throttle: int | None = None
        self._throttled_at = 0.0
        self._rpm = TokenBucket(share.rpm or 0, clock)
        self._tpm = TokenBucket(share.tpm or 0, clock)
        self._changed = asyncio.Event()

    def set_share(self, share: Share) -> None:
        """Apply a new share (takes effect for calls not yet started)."""
        self.share = share
        self._rpm.set_rate(share.rpm or 0)
        self._tpm.set_rate(share.tpm or 0)
        self._notify()

    @property
    def capacity(self) -> int:
        """Calls that may run at once now: the share, less any throttle."""
        self._recover()
        if self._throttle is None:
            return self.share.concurrency
        return min(self.share.concurrency, self._throttle)

    @property
    def free(self) -> int:
        """Calls that could start now (ignoring rates)."""
        return max(0, self.capacity - self.in_flight)

    def start_delay(self, tokens: int) -> float:
        """Seconds before one more call of ``tokens`` could start.

        Returns:
            0 when it may start now; ``inf`` when it must wait for a
            running call to finish (or for a share).
        """
        if self.free <= 0:
            return math.inf
        delay = 0.0
        if self.share.rpm is not None:
            delay = max(delay, self._rpm.wait_time(1))
        if self.share.tpm is not None:
            delay = max(delay, self._tpm.wait_time(tokens))
        return delay

    def try_start(self, tokens: int) -> Reservation | None:
        """Start a call if capacity and rates allow it now.

        Args:
            tokens: The call's estimated tokens.

        Returns:
            What the call holds (give it to :meth:`finish`), or None
            when it may not start yet.
        """
        if self.start_delay(tokens) > 0:
            return None
        self.in_flight += 1
        if self.share.rpm is not None:
            self._rpm.take(1)
        reserved = 0
        if self.share.tpm is not None:
            # Never more than a minute of the budget: an estimate above
            # it (a huge max_tokens) must not stop the model for longer.
            reserved = min(tokens, max(1, int(self.share.tpm)))
            self._tpm.take(reserved)
        return Reservation(reserved)

    def finish(
        self, reservation: Reservation, used_tokens: int | None
    ) -> None:
        """Record the end of a call and settle its reservation.

        Args:
            reservation: What :meth:`try_start` gave the call.
            used_tokens: The tokens the provider reported, or None when
                the call failed (its reservation comes back whole).
        """
        self.in_flight -= 1
        if self.share.tpm is not None and reservation.tokens:
            used = 0 if used_tokens is None else used_tokens
            difference = reservation.tokens - used
            if difference > 0:
                self._tpm.give_back(difference)
            elif difference < 0:
                self._tpm.take(-difference)
        self._notify()

    def rate_limited(self) -> None:
        """The provider said 429: halve the effective concurrency."""
        current = self._throttle or self.share.concurrency
        self._throttle = max(1, min(current, max(self.in_flight, 1)) // 2)
        self._throttled_at = self._clock()

    def _recover(self) -> None:
        if self._throttle is None:
            return
        quiet = self._clock() - self._throttled_at
        steps = int(quiet // RECOVERY_INTERVAL_S)
        if steps:
            self._throttle += steps
            self._throttled_at += steps * RECOVERY_INTERVAL_S
            if self._throttle >= self.share.concurrency:
                self._throttle = None

    @property
    def throttled(self) -> bool:
        """Whether a recent 429 holds the concurrency down."""
        self._recover()
        return self._throttle is not None

    def _notify(self) -> None:
        self._changed.set()

    async def wait_for_change(self, timeout_s: float) -> None:
        """Sleep until a call finishes or the share changes (or timeout)."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)
