"""Anthropic Message Batches (``messages.batches``).

A batch is one call carrying every request as ``{custom_id, params}``
(the Messages parameters the live adapter sends). It is ``in_progress``
until ``ended``; the results stream is JSON lines, each ``succeeded``
(a message), ``errored`` (an error object), ``expired`` or ``canceled``.
A batch whose cancel was asked is reported ``cancelled`` once ended, one
with expired lines ``expired``. Batches keep no metadata, so a label
cannot be stored nor a batch found by it (``can_find`` is False); the
key's batches can be listed instead (``can_list``), newest first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from .._call import CallContext
from .._http_errors import error_for_status
from ..anthropic import AnthropicProvider, completion_from_message
from ..errors import TransientError
from .base import (
    BatchCall,
    BatchClient,
    BatchRequest,
    BatchStatus,
    LineOutcome,
    ListedBatch,
    ProviderBatchRef,
    line_error,
)
from .split import BatchLimits

#: Batches per page of the list (the API allows 1 to 1,000).
_LIST_PAGE = 100
# The HTTP status each error type stands for.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicBatchClient(BatchClient[Any, Any]):
    """Message Batches (registry name ``anthropic``)."""

    adapter: AnthropicProvider
    provider = "anthropic"
    can_list = True
    # 100,000 requests and 256 MB per batch.
    default_limits = BatchLimits(100_000, 256 * 10**6)

    def _entry(self, settings: Any, item: BatchRequest) -> dict[str, Any]:
        params = dict(self.adapter.message_params(settings, item.request))
        # The SDK's typed params have no sampling fields any more: what
        # the live call sends as extra_body goes in the params here.
        params.update(params.pop("extra_body", None) or {})
        return {"custom_id": item.custom_id, "params": params}

    def line_size(self, settings: Any, request: BatchRequest) -> int:
        """Bytes of the request in the create call's body."""
        entry = json.dumps(self._entry(settings, request))
        return len(entry.encode()) + 1

    async def _submit(
        self,
        begun: BatchCall[Any, Any],
        requests: Sequence[BatchRequest],
        label: str | None,
    ) -> ProviderBatchRef:
        # Message batches keep no metadata: the label cannot be stored.
        batch = await begun.client.messages.batches.create(
            requests=[self._entry(begun.settings, r) for r in requests]
        )
        return ProviderBatchRef(self.provider, batch.id)

    async def _list(
        self, begun: BatchCall[Any, Any], since: datetime, until: datetime
    ) -> list[ListedBatch]:
        listed = []
        # Newest first: stop at the first batch older than ``since``.
        async for batch in begun.client.messages.batches.list(
            limit=_LIST_PAGE
        ):
            if batch.created_at < since:
                break
            if batch.created_at <= until:
                ref = ProviderBatchRef(self.provider, batch.id)
                listed.append(
                    ListedBatch(ref, batch.created_at, _status(batch))
                )
        return listed

    async def _poll(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> BatchStatus:
        batch = await begun.client.messages.batches.retrieve(ref.batch_id)
        return _status(batch)

    async def _results(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> AsyncIterator[tuple[str, LineOutcome]]:
        stream = await begun.client.messages.batches.results(ref.batch_id)
        async for line in stream:
            yield line.custom_id, _outcome(line.result, begun.ctx)

    async def _cancel(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> None:
        await begun.client.messages.batches.cancel(ref.batch_id)


def _status(batch: Any) -> BatchStatus:
    """A message batch's status."""
    counts = batch.request_counts
    total = (
        counts.processing
        + counts.succeeded
        + counts.errored
        + counts.canceled
        + counts.expired
    )
    state = "running"
    if batch.processing_status == "ended":
        if batch.cancel_initiated_at is not None:
            state = "cancelled"
        elif counts.expired:
            state = "expired"
        else:
            state = "completed"
    return BatchStatus(
        state=state,  # type: ignore[arg-type]
        total=total,
        succeeded=counts.succeeded,
        failed=counts.errored,
    )


def _outcome(result: Any, ctx: CallContext) -> LineOutcome:
    if result.type == "succeeded":
        return completion_from_message(result.message, ctx)
    if result.type == "errored":
        error = result.error.error
        status = _STATUS_OF_TYPE.get(error.type, 500)
        return line_error(error_for_status(status, error.message, ctx), ctx)
    failure = TransientError(f"{ctx.provider}: batch line {result.type}")
    return line_error(failure, ctx, ran=False)
