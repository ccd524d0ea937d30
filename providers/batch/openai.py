"""OpenAI and Azure OpenAI batches: an uploaded JSONL file and ``batches``.

A batch is one input file (purpose ``batch``) of chat-completions lines
``{"custom_id", "method": "POST", "url", "body"}``, all for one model,
and a batch made from it with a 24 h window. When it ends, the output
file holds the answers and the error file the lines that failed
(``response.status_code`` is the line's own HTTP status) or never ran
(``error.code`` ``batch_expired`` or ``batch_cancelled``).

Azure OpenAI takes the same calls under ``/openai`` (a global-batch
deployment names the model in each line; the line URL is
``/chat/completions``). The SDK clients are the live adapters' own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from .._call import CallContext
from .._http_errors import error_for_status
from .._openai_errors import is_content_filter
from .._openai_wire import completion_from_data
from ..errors import TransientError
from ..openai import OpenAIChatAdapter
from .base import (
    BatchCall,
    BatchClient,
    BatchRequest,
    BatchStatus,
    LineOutcome,
    ProviderBatchRef,
    line_error,
)
from .split import BatchLimits

_RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
_NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})
#: The batch metadata key holding the caller's label.
LABEL_KEY = "metasync_label"
_LIST_PAGE = 100


class OpenAIBatchClient(BatchClient[Any, Any]):
    """Batches on api.openai.com (registry name ``openai``)."""

    adapter: OpenAIChatAdapter[Any]
    provider = "openai"
    can_find = True
    # 50,000 requests and 200 MB per input file.
    default_limits = BatchLimits(50_000, 200 * 10**6)
    line_url = "/v1/chat/completions"

    def _line(self, settings: Any, item: BatchRequest) -> bytes:
        body = self.adapter.request_body(settings, item.request)
        line = {
            "custom_id": item.custom_id,
            "method": "POST",
            "url": self.line_url,
            "body": body,
        }
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"

    def line_size(self, settings: Any, request: BatchRequest) -> int:
        """Bytes of the request's line in the input file."""
        return len(self._line(settings, request))

    async def _submit(
        self,
        begun: BatchCall[Any, Any],
        requests: Sequence[BatchRequest],
        label: str | None,
    ) -> ProviderBatchRef:
        data = b"".join(self._line(begun.settings, r) for r in requests)
        uploaded = await begun.client.files.create(
            file=("batch.jsonl", data), purpose="batch"
        )
        batch = await begun.client.batches.create(
            input_file_id=uploaded.id,
            endpoint=self.line_url,
            completion_window="24h",
            metadata={LABEL_KEY: label} if label else None,
        )
        return ProviderBatchRef(self.provider, batch.id)

    async def _find(
        self,
        begun: BatchCall[Any, Any],
        label: str,
        since: datetime,
        line_ids: tuple[str, ...],
    ) -> ProviderBatchRef | None:
        oldest = since.timestamp()
        # Newest first: stop at the first batch older than ``since``.
        async for batch in begun.client.batches.list(limit=_LIST_PAGE):
            if batch.created_at < oldest:
                return None
            if (batch.metadata or {}).get(LABEL_KEY) == label:
                return ProviderBatchRef(self.provider, batch.id)
        return None

    async def _poll(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> BatchStatus:
        batch = await begun.client.batches.retrieve(ref.batch_id)
        counts = batch.request_counts
        message = None
        if batch.errors is not None and batch.errors.data:
            message = "; ".join(
                str(e.message or e.code) for e in batch.errors.data
            )
        state = "running" if batch.status in _RUNNING else batch.status
        return BatchStatus(
            state=state,  # type: ignore[arg-type]
            total=counts.total if counts else 0,
            succeeded=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            message=message,
        )

    async def _results(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> AsyncIterator[tuple[str, LineOutcome]]:
        batch = await begun.client.batches.retrieve(ref.batch_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await begun.client.files.content(file_id)
            for raw in content.content.splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    yield line["custom_id"], _outcome(line, begun.ctx)

    async def _cancel(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> None:
        await begun.client.batches.cancel(ref.batch_id)


class AzureOpenAIBatchClient(OpenAIBatchClient):
    """Batches on Azure OpenAI (registry name ``azure_openai``)."""

    provider = "azure_openai"
    # 100,000 requests and 200 MB per input file.
    default_limits = BatchLimits(100_000, 200 * 10**6)
    line_url = "/chat/completions"


def _outcome(line: Mapping[str, Any], ctx: CallContext) -> LineOutcome:
    """One output or error line as an answer or a line error."""
    response = line.get("response")
    error = line.get("error")
    if isinstance(response, Mapping):
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if status == 200:
            return completion_from_data(body, ctx)
        details = body.get("error") if isinstance(body, Mapping) else None
        message = (
            details.get("message") if isinstance(details, Mapping) else body
        )
        return line_error(
            error_for_status(
                status,
                message,
                ctx,
                content_filter=is_content_filter(details),
            ),
            ctx,
        )
    code = error.get("code") if isinstance(error, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else error
    failure = TransientError(
        f"{ctx.provider}: batch line {code}: {ctx.safe_message(message)}"
    )
    return line_error(failure, ctx, ran=code not in _NOT_RUN)
