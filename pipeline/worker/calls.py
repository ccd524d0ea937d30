"""One provider call for one item, and the outcome it leads to."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from pipeline.jobs.shapes import DEFAULT_MAX_ATTEMPTS
from pipeline.logging import bound_context, get_logger
from pipeline.states import Status
from pipeline.store.document_collection import utcnow
from pipeline.worker.fallback import FallbackRouter
from pipeline.worker.item_store import Item, Outcome, answer_result
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.requests import item_request
from pipeline.worker.retry import RetryPolicy, error_record
from pipeline.worker.served_model import ServedModel
from providers.base import (
    Completion,
    CompletionRequest,
    LLMProvider,
    StreamEvent,
)
from providers.errors import RateLimitError

S = Status
log = get_logger(__name__)


@dataclass
class Attempt:
    """How one call of an item went.

    Attributes:
        outcome: What to write for the item.
        used_tokens: Tokens the provider reported (None: unknown).
        rate_limited: The provider said to slow down.
    """

    outcome: Outcome
    used_tokens: int | None = None
    rate_limited: bool = False


class Calls:
    """Calls the provider; turns each answer or error into an outcome.

    Args:
        provider: The provider's client.
        retry: Which errors are retried, and after how long.
        rng: Source of retry jitter.
        metrics: Where latency, tokens and retries are counted.
        fallbacks: Moves an item to its model's next fallback when the
            provider is down (None: items never move).
    """

    def __init__(
        self,
        provider: LLMProvider,
        retry: RetryPolicy,
        rng: random.Random,
        metrics: WorkerMetrics,
        *,
        fallbacks: FallbackRouter | None = None,
    ) -> None:
        self.provider = provider
        self._fallbacks = fallbacks
        self.retry = retry
        self.rng = rng
        self._metrics = metrics

    async def call(
        self, model: ServedModel, request: CompletionRequest
    ) -> Completion:
        """Call the provider once for ``model``."""
        if model.key_error is not None:
            raise model.key_error
        return await self.provider.complete(
            model.config, request, model.api_key
        )

    async def stream(
        self, model: ServedModel, request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        """Stream one completion of ``model``."""
        if model.key_error is not None:
            raise model.key_error
        async for event in self.provider.stream(
            model.config, request, model.api_key
        ):
            yield event

    async def attempt(self, model: ServedModel, item: Item) -> Attempt:
        """Call the provider for ``item``; never raises (but cancels)."""
        with bound_context(
            job_id=str(item["jobId"]),
            item_id=str(item["_id"]),
            model=model.name,
        ):
            try:
                completion = await self.call(model, item_request(item))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                return Attempt(
                    self.failure(model, item, error),
                    rate_limited=isinstance(error, RateLimitError),
                )
            return Attempt(
                self.success(model, item, completion),
                used_tokens=completion.usage.total_tokens,
            )

    def success(
        self, model: ServedModel, item: Item, completion: Completion
    ) -> Outcome:
        """The outcome of an answer: PROCESSED, with its cost."""
        usage = completion.usage
        cost = model.pricing.cost(usage.input_tokens, usage.output_tokens)
        self._metrics.call_finished(
            model.name,
            completion.latency_ms,
            usage.input_tokens,
            usage.output_tokens,
        )
        return Outcome(
            item=item,
            status=S.PROCESSED,
            result=answer_result(completion, cost, completion.latency_ms),
            cost=cost,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )

    def failure(
        self, model: ServedModel, item: Item, error: Exception
    ) -> Outcome:
        """The outcome of an error: a retry, a fallback, or FAILED."""
        decision = self.retry.decide(
            error,
            item.get("attempts", 1),
            item.get("maxAttempts", DEFAULT_MAX_ATTEMPTS),
            self.rng,
        )
        record = error_record(error)
        if self._fallbacks is not None:
            moved = self._fallbacks.outcome(item, error, decision, record)
            if moved is not None:
                return moved
        if decision.retry:
            self._metrics.retried(model.name, str(record["type"]))
            log.info(
                "item_retry",
                error_type=record["type"],
                error=record["message"],
                delay_s=round(decision.delay_s, 2),
                attempts=item.get("attempts"),
            )
            return Outcome(
                item=item,
                status=S.PENDING,
                error=record,
                next_attempt_at=utcnow() + timedelta(seconds=decision.delay_s),
            )
        log.warning(
            "item_failed",
            error_type=record["type"],
            error=record["message"],
            attempts=item.get("attempts"),
        )
        return Outcome(item=item, status=S.FAILED, error=record)
