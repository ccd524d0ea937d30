"""Chat completions through a worker: the model limits, ahead of batches.

:class:`ChatMixin` is part of
:class:`~pipeline.worker.engine.ProviderWorker` (split out to keep each
module to one concern): a chat call waits
for a slot of the model's limiter, and while one waits the scheduler
starts no batch item of that model, so interactive calls go first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pipeline.worker.base import WorkerBase
from pipeline.worker.limits import Reservation
from pipeline.worker.requests import request_tokens
from pipeline.worker.served_model import ServedModel
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


class ChatMixin(WorkerBase):
    """The chat-completion methods of a provider worker."""

    async def complete(
        self, model_name: str, request: CompletionRequest
    ) -> Completion:
        """One chat completion under the model's limits, with retries.

        Raises:
            ProviderError: The last error, once retries are spent.
            KeyError: The model is not served here.
        """
        await self.start()
        model = await self._served(model_name)
        for attempt in range(1, CHAT_ATTEMPTS + 1):
            try:
                async with self._slot(model_name, request) as slot:
                    completion = await self._call(model, request)
                    slot.used = completion.usage.total_tokens
                    return completion
            except ProviderError as error:
                await self._chat_backoff(model_name, error, attempt)
        raise AssertionError("unreachable")

    async def stream(
        self, model_name: str, request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        """Stream a chat completion under the model's limits.

        Retries only while nothing has been sent yet.
        """
        await self.start()
        model = await self._served(model_name)
        for attempt in range(1, CHAT_ATTEMPTS + 1):
            sent = False
            try:
                async with self._slot(model_name, request) as slot:
                    if model.key_error is not None:
                        raise model.key_error
                    async for event in self._provider.stream(
                        model.config, request, model.api_key
                    ):
                        if isinstance(event, TextDelta):
                            sent = True
                        else:
                            slot.used = event.usage.total_tokens
                        yield event
                    return
            except ProviderError as error:
                if sent:
                    raise
                await self._chat_backoff(model_name, error, attempt)

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
            self.limiters[model_name].finish(slot.reservation, slot.used)
            self._wake.set()

    async def _served(self, model_name: str) -> ServedModel:
        if model_name not in self.models:
            await self._refresh_models()
            await self._sync_once()
        model = self.models.get(model_name)
        if model is None:
            raise KeyError(
                f"model {model_name!r} is not served by {self.name}"
            )
        return model

    async def _acquire(self, model: str, tokens: int) -> Reservation:
        limiter = self.limiters[model]
        self._chat_waiters[model] += 1
        try:
            while True:
                delay = limiter.start_delay(tokens)
                if delay <= 0:
                    reservation = limiter.try_start(tokens)
                    if reservation is not None:
                        return reservation
                if limiter.share.concurrency == 0:
                    await self._sync_once()
                await limiter.wait_for_change(min(delay, 1.0))
        finally:
            self._chat_waiters[model] -= 1

    async def _chat_backoff(
        self, model: str, error: ProviderError, attempt: int
    ) -> None:
        if isinstance(error, RateLimitError):
            self.limiters[model].rate_limited()
        decision = self._retry.decide(error, attempt, CHAT_ATTEMPTS, self._rng)
        if not decision.retry or decision.delay_s > CHAT_MAX_RETRY_WAIT_S:
            raise error
        await asyncio.sleep(decision.delay_s)
