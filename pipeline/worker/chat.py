"""Chat completions through a worker: the model limits, ahead of batches.

A chat call waits for a slot of the model's limiter; while one waits,
the scheduler starts no batch item of that model (it reads
:attr:`Chat.waiters`), so interactive calls go first.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pipeline.worker.calls import Calls
from pipeline.worker.limits import Reservation
from pipeline.worker.requests import request_tokens
from pipeline.worker.served_model import ServedModel, ServedModels
from providers.base import (
    Completion,
    CompletionRequest,
    StreamEvent,
    TextDelta,
)
from providers.errors import ProviderError, RateLimitError

#: Attempts of a chat completion before its error reaches the caller.
CHAT_ATTEMPTS = 3
#: Longest a chat call waits for a provider's Retry-After.
CHAT_MAX_RETRY_WAIT_S = 30.0


@dataclass
class _Slot:
    """Tokens of one chat call: reserved up front, used once known."""

    reservation: Reservation
    used: int | None = None


class Chat:
    """Chat completions under the model limits the worker's items share.

    Args:
        served: The worker's models and limiters.
        calls: Calls the provider.
        learn_models: Reads the catalog again and syncs the limits (a
            model added since the last poll).
        sync_limits: Exchanges shares with the limits coordinator now.
        wake: Wakes the scheduler (a freed slot).
        worker: The worker's name (in errors).
    """

    def __init__(
        self,
        served: ServedModels,
        calls: Calls,
        *,
        learn_models: Callable[[], Awaitable[None]],
        sync_limits: Callable[[], Awaitable[None]],
        wake: Callable[[], None],
        worker: str,
    ) -> None:
        self._served = served
        self._calls = calls
        self._learn_models = learn_models
        self._sync_limits = sync_limits
        self._wake = wake
        self._worker = worker
        #: Chat calls waiting for a slot, per model.
        self.waiters: defaultdict[str, int] = defaultdict(int)

    async def complete(
        self, model_name: str, request: CompletionRequest
    ) -> Completion:
        """One chat completion under the model's limits, with retries.

        Raises:
            ProviderError: The last error, once retries are spent.
            KeyError: The model is not served here.
        """
        model = await self._model(model_name)
        for attempt in range(1, CHAT_ATTEMPTS + 1):
            try:
                async with self._slot(model_name, request) as slot:
                    completion = await self._calls.call(model, request)
                    slot.used = completion.usage.total_tokens
                    return completion
            except ProviderError as error:
                await self._backoff(model_name, error, attempt)
        raise AssertionError("unreachable")

    async def stream(
        self, model_name: str, request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        """Stream a chat completion under the model's limits.

        Retries only while nothing has been sent yet.
        """
        model = await self._model(model_name)
        for attempt in range(1, CHAT_ATTEMPTS + 1):
            sent = False
            try:
                async with self._slot(model_name, request) as slot:
                    async for event in self._calls.stream(model, request):
                        if isinstance(event, TextDelta):
                            sent = True
                        else:
                            slot.used = event.usage.total_tokens
                        yield event
                    return
            except ProviderError as error:
                if sent:
                    raise
                await self._backoff(model_name, error, attempt)

    @asynccontextmanager
    async def _slot(
        self, model_name: str, request: CompletionRequest
    ) -> AsyncIterator[_Slot]:
        """Hold a slot of the model's limiter for one call.

        Freed on exit (before any backoff, so a waiting call holds no
        concurrency) with the tokens the call reported, if any.
        """
        slot = _Slot(await self._acquire(model_name, request_tokens(request)))
        try:
            yield slot
        finally:
            self._served.limiters[model_name].finish(
                slot.reservation, slot.used
            )
            self._wake()

    async def _model(self, model_name: str) -> ServedModel:
        if model_name not in self._served:
            await self._learn_models()
        model = self._served.models.get(model_name)
        if model is None:
            raise KeyError(
                f"model {model_name!r} is not served by {self._worker}"
            )
        return model

    async def _acquire(self, model: str, tokens: int) -> Reservation:
        limiter = self._served.limiters[model]
        self.waiters[model] += 1
        try:
            while True:
                delay = limiter.start_delay(tokens)
                if delay <= 0:
                    reservation = limiter.try_start(tokens)
                    if reservation is not None:
                        return reservation
                if limiter.share.concurrency == 0:
                    await self._sync_limits()
                await limiter.wait_for_change(min(delay, 1.0))
        finally:
            self.waiters[model] -= 1

    async def _backoff(
        self, model: str, error: ProviderError, attempt: int
    ) -> None:
        if isinstance(error, RateLimitError):
            self._served.limiters[model].rate_limited()
        calls = self._calls
        decision = calls.retry.decide(error, attempt, CHAT_ATTEMPTS, calls.rng)
        if not decision.retry or decision.delay_s > CHAT_MAX_RETRY_WAIT_S:
            raise error
        await asyncio.sleep(decision.delay_s)
