"""Gemini Batch Mode (``batches``), with inline requests.

A batch is one ``models/{model}:batchGenerateContent`` call carrying the
requests inline (the contents and config the live adapter sends, and the
custom id in ``metadata``); it is the operation ``batches/{id}``. Once
``JOB_STATE_SUCCEEDED`` it holds one response per request, in request
order, each an answer or an error (a ``google.rpc.Status``). Answers are
matched by the ``metadata`` custom id when the API returns it, else by
position (the reference keeps the ids in order). A label is kept as
the batch's display name. A batch that failed, expired or was cancelled
gives no answers.

Inline requests are capped at 20 MB: a larger batch is uploaded as a
JSON lines file (``{"key", "request"}``, the request in the REST form)
and its answers come back as a file keyed the same way (up to 2 GB).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from .._call import CallContext
from .._http_errors import error_for_status
from ..errors import ProviderError
from ..gemini import (
    GeminiProvider,
    completion_from_response,
    contents_of,
)
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

_STATES = {
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}
# HTTP status of a google.rpc.Code (codes of 100 and up are HTTP already).
_HTTP_OF_RPC = {
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    7: 403,
    8: 429,
    9: 400,
    13: 500,
    14: 503,
    16: 401,
}
_ID_KEY = "custom_id"
_LIST_PAGE = 50


class GeminiBatchClient(BatchClient[Any, Any]):
    """Gemini batches (registry name ``gemini``)."""

    adapter: GeminiProvider
    provider = "gemini"
    can_find = True
    # An input file: up to 2 GB (inline requests only up to 20 MB).
    default_limits = BatchLimits(100_000, 2 * 10**9)
    #: Above this payload, requests go in an uploaded file.
    inline_max_bytes = 20 * 10**6

    def _inline(self, item: BatchRequest) -> dict[str, Any]:
        config = self.adapter.generation_config(item.request)
        return {
            "contents": contents_of(item.request),
            "config": config,
            "metadata": {_ID_KEY: item.custom_id},
        }

    def line_size(self, settings: Any, request: BatchRequest) -> int:
        """Bytes of the request in the create call's body (about)."""
        inline = self._inline(request)
        inline["config"] = inline["config"].model_dump(exclude_none=True)
        return len(json.dumps(inline).encode()) + 1

    async def _submit(
        self,
        begun: BatchCall[Any, Any],
        requests: Sequence[BatchRequest],
        label: str | None,
    ) -> ProviderBatchRef:
        size = sum(self.line_size(begun.settings, r) for r in requests)
        src: Any
        if size > self.inline_max_bytes:
            src = await self._upload(begun, requests, label)
        else:
            src = [self._inline(r) for r in requests]
        job = await begun.client.aio.batches.create(
            model=begun.settings.model_id,
            src=src,
            config={"display_name": label} if label else None,
        )
        return ProviderBatchRef(
            self.provider, job.name, tuple(r.custom_id for r in requests)
        )

    async def _find(
        self,
        begun: BatchCall[Any, Any],
        label: str,
        since: datetime,
        line_ids: tuple[str, ...],
    ) -> ProviderBatchRef | None:
        pager = await begun.client.aio.batches.list(
            config={"page_size": _LIST_PAGE}
        )
        # Newest first: stop at the first batch older than ``since``.
        async for job in pager:
            if job.create_time is not None and job.create_time < since:
                return None
            if job.display_name == label and job.name:
                return ProviderBatchRef(self.provider, job.name, line_ids)
        return None

    async def _poll(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> BatchStatus:
        job = await begun.client.aio.batches.get(name=ref.batch_id)
        state = getattr(job.state, "value", job.state)
        message = job.error.message if job.error is not None else None
        return BatchStatus(
            state=_STATES.get(str(state), "running"),  # type: ignore[arg-type]
            total=len(ref.line_ids),
            message=message,
        )

    async def _upload(
        self,
        begun: BatchCall[Any, Any],
        requests: Sequence[BatchRequest],
        label: str | None,
    ) -> str:
        """Upload the requests as a JSON lines file; return its name."""
        data = b"".join(
            json.dumps(
                {"key": r.custom_id, "request": _rest_request(r)}
            ).encode()
            + b"\n"
            for r in requests
        )
        uploaded = await begun.client.aio.files.upload(
            file=io.BytesIO(data),
            config={
                "mime_type": "application/jsonl",
                "display_name": label or "metasync-batch",
            },
        )
        name: str = uploaded.name
        return name

    async def _results(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> AsyncIterator[tuple[str, LineOutcome]]:
        job = await begun.client.aio.batches.get(name=ref.batch_id)
        if job.dest is not None and job.dest.file_name:
            data = await begun.client.aio.files.download(
                file=job.dest.file_name
            )
            for raw in data.splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    yield str(line["key"]), _file_outcome(line, begun.ctx)
            return
        responses = (job.dest.inlined_responses if job.dest else None) or []
        for index, item in enumerate(responses):
            metadata = item.metadata or {}
            custom_id = metadata.get(_ID_KEY)
            if custom_id is None and index < len(ref.line_ids):
                custom_id = ref.line_ids[index]
            if custom_id is not None:
                yield custom_id, _outcome(item, begun.ctx)

    async def _cancel(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> None:
        await begun.client.aio.batches.cancel(name=ref.batch_id)


def _rest_request(item: BatchRequest) -> dict[str, Any]:
    """A request in the API's own (REST) form, for an input file."""
    request = item.request
    body: dict[str, Any] = {"contents": contents_of(request)}
    if request.system_prompt:
        body["systemInstruction"] = {
            "parts": [{"text": request.system_prompt}]
        }
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if config:
        body["generationConfig"] = config
    return body


def _file_outcome(line: Mapping[str, Any], ctx: CallContext) -> LineOutcome:
    """A line of a responses file (REST JSON) as an answer or an error."""
    from google.genai.types import GenerateContentResponse, JobError

    error = line.get("error")
    response = line.get("response")
    item = SimpleNamespace(
        error=JobError.model_validate(error) if error else None,
        response=(
            GenerateContentResponse.model_validate(response)
            if response
            else None
        ),
    )
    return _outcome(item, ctx)


def _outcome(item: Any, ctx: CallContext) -> LineOutcome:
    if item.error is not None:
        code = item.error.code or 13
        status = code if code >= 100 else _HTTP_OF_RPC.get(code, 500)
        return line_error(
            error_for_status(status, item.error.message, ctx), ctx
        )
    if item.response is None:
        return line_error(
            error_for_status(500, "the line has no response", ctx), ctx
        )
    try:
        return completion_from_response(item.response, ctx)
    except ProviderError as exc:
        return line_error(exc, ctx)
