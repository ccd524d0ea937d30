"""Gemini Batch Mode on the fake server (inline requests).

Routes (``{version}`` is ``v1beta`` and kin)::

    POST /{version}/models/{model}:batchGenerateContent   create
    GET  /{version}/batches/{id}                          poll (operation)
    POST /{version}/batches/{id}:cancel                   cancel
    GET  /{version}/batches                               list, newest first

A batch is created from ``batch.inputConfig.requests.requests``: each
``{request: GenerateContentRequest, metadata}``. Create and poll answer
with the long-running operation ``batches/{id}`` whose ``metadata`` is
the batch: ``state`` goes ``BATCH_STATE_PENDING`` → ``RUNNING`` →
``SUCCEEDED`` (or ``FAILED``, ``CANCELLED``, ``EXPIRED``), and once
succeeded ``metadata.output.inlinedResponses.inlinedResponses`` holds one
response per request, in request order, each a ``response`` or an
``error`` (a ``google.rpc.Status``). Batches that did not succeed give no
output. ``lineErrors.customIds`` name lines by ``metadata.custom_id``, or
as ``line-{index}`` when there is none. An input file
(``inputConfig.fileName``) is not supported here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .batch_engine import BatchLine, BatchStore, FakeBatch, LineResult
from .config import FakeConfig
from .gemini_wire import GeminiWire, gemini_call
from .wire import WireError

VENDOR = "gemini"
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta."
_STATES = {
    "validating": "BATCH_STATE_PENDING",
    "in_progress": "BATCH_STATE_RUNNING",
    "completed": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "cancelled": "BATCH_STATE_CANCELLED",
    "expired": "BATCH_STATE_EXPIRED",
}
# google.rpc.Code of a line's error, by the HTTP status it stands for.
_RPC_CODES = {400: 3, 429: 8, 500: 13, 503: 14}


def _stamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    )


class GeminiBatchRoutes:
    """The batch routes of the Gemini API.

    Args:
        store: The server's batches.
        config: The server's behaviours.
    """

    def __init__(self, store: BatchStore, config: FakeConfig) -> None:
        self.store = store
        self.config = config
        self.wire = GeminiWire()

    def add_to(self, app: web.Application) -> None:
        """Register the poll and cancel routes.

        Creation shares the path of ``generateContent``, and polls under
        ``/v1`` share OpenAI's path: the app dispatches those.
        """
        app.router.add_get("/{version}/batches", self.list_batches)
        app.router.add_get("/{version}/batches/{batch_id}", self.retrieve)
        app.router.add_post("/{version}/batches/{batch_action}", self._cancel)

    async def create(self, request: web.Request, model: str) -> web.Response:
        """``models/{model}:batchGenerateContent``.

        Args:
            request: The request.
            model: The model id from the path.

        Returns:
            The operation.
        """
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "the body must be JSON")
        batch_doc = body.get("batch") if isinstance(body, Mapping) else None
        config = (
            batch_doc.get("inputConfig")
            if isinstance(batch_doc, Mapping)
            else None
        )
        if not isinstance(config, Mapping):
            return self._error(400, "batch.inputConfig is required")
        if "fileName" in config:
            return self._error(400, "inputConfig.fileName: not supported")
        holder = config.get("requests")
        items = holder.get("requests") if isinstance(holder, Mapping) else None
        if not isinstance(items, list) or not items:
            return self._error(400, "batch.inputConfig.requests is empty")
        key = request.headers.get("x-goog-api-key")
        lines = [
            self._line(index, item, model, key)
            for index, item in enumerate(items)
        ]
        assert isinstance(batch_doc, Mapping)
        batch = self.store.add(
            FakeBatch(
                id=self.store.new_id("fakebatch"),
                vendor=VENDOR,
                model=model,
                lines=lines,
                behaviours={model: self.config.behaviour(model)},
                seed=self.config.seed,
                extra={
                    "displayName": batch_doc.get("displayName", ""),
                    "metadata": [
                        item.get("metadata")
                        if isinstance(item, Mapping)
                        else None
                        for item in items
                    ],
                },
            )
        )
        return web.json_response(self._render(batch, time.time()))

    def _line(
        self, index: int, item: Any, model: str, key: str | None
    ) -> BatchLine:
        # Gemini has no custom ids: a line is known by its position, or
        # by metadata.custom_id when the caller puts one there (so
        # lineErrors can name lines).
        item = item if isinstance(item, Mapping) else {}
        metadata = item.get("metadata")
        custom_id = f"line-{index}"
        if isinstance(metadata, Mapping) and metadata.get("custom_id"):
            custom_id = str(metadata["custom_id"])
        request = item.get("request")
        if not isinstance(request, Mapping):
            return BatchLine(custom_id, None, "request is required")
        try:
            return BatchLine(custom_id, gemini_call(request, model, key))
        except WireError as exc:
            return BatchLine(custom_id, None, exc.message)

    async def list_batches(self, request: web.Request) -> web.Response:
        """``batches``: operations, newest first, by ``pageSize`` pages."""
        self.store.count(VENDOR, "lists")
        mine = [
            b
            for b in reversed(self.store.batches.values())
            if b.vendor == VENDOR
        ]
        try:
            start = int(request.query.get("pageToken") or 0)
            size = int(request.query.get("pageSize") or 50)
        except ValueError:
            return self._error(400, "pageSize and pageToken are integers")
        now = time.time()
        body: dict[str, Any] = {
            "operations": [
                self._render(b, now) for b in mine[start : start + size]
            ]
        }
        if start + size < len(mine):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    async def retrieve(self, request: web.Request) -> web.Response:
        """``batches/{id}``: the operation (also reached via ``/v1``)."""
        batch = self.store.get(VENDOR, request.match_info["batch_id"])
        if batch is None:
            return self._error(404, "Batch not found.")
        self.store.count(VENDOR, "polls")
        return web.json_response(self._render(batch, time.time()))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch_id, _, action = request.match_info["batch_action"].partition(":")
        if action != "cancel":
            return self._error(404, f"unknown method {action!r}")
        batch = self.store.get(VENDOR, batch_id)
        if batch is None:
            return self._error(404, "Batch not found.")
        batch.cancel(time.time())
        self.store.count(VENDOR, "cancels")
        return web.json_response({})

    def _render(self, batch: FakeBatch, now: float) -> dict[str, Any]:
        outcome = batch.outcome(now)
        state = _STATES[outcome or batch.phase(now)]
        results = batch.results(now)
        succeeded = sum(r.kind == "succeeded" for r in results)
        failed = sum(r.kind == "errored" for r in results)
        name = f"batches/{batch.id}"
        metadata: dict[str, Any] = {
            "@type": _TYPE + "GenerateContentBatch",
            "name": name,
            "model": f"models/{batch.model}",
            "displayName": batch.extra["displayName"],
            "state": state,
            "createTime": _stamp(batch.created),
            "updateTime": _stamp(now),
            "batchStats": {
                "requestCount": str(len(batch.lines)),
                "successfulRequestCount": str(succeeded),
                "failedRequestCount": str(failed),
                "pendingRequestCount": str(0 if outcome else len(batch.lines)),
            },
        }
        operation: dict[str, Any] = {"name": name, "metadata": metadata}
        if outcome is not None:
            metadata["endTime"] = _stamp(batch.ended_at(now))
            operation["done"] = True
        if outcome == "completed":
            output = {
                "inlinedResponses": {
                    "inlinedResponses": [
                        self._response(r, meta)
                        for r, meta in zip(
                            results, batch.extra["metadata"], strict=True
                        )
                    ]
                }
            }
            metadata["output"] = output
            operation["response"] = {
                "@type": _TYPE + "GenerateContentBatchOutput",
                **output,
            }
        elif outcome == "failed":
            operation["error"] = {"code": 13, "message": "Batch failed."}
        return operation

    def _response(self, result: LineResult, metadata: Any) -> dict[str, Any]:
        item: dict[str, Any] = {}
        if metadata is not None:
            item["metadata"] = metadata
        if result.kind == "succeeded":
            assert result.call is not None and result.answer is not None
            item["response"] = self.wire.completion(result.call, result.answer)
        else:
            status = result.status or 500
            item["error"] = {
                "code": _RPC_CODES.get(status, 13),
                "message": result.message or "The request did not run.",
            }
        return item

    def _error(self, status: int, message: str) -> web.Response:
        kind = "bad_request" if status < 500 else "server_error"
        body = self.wire.error(kind, status, message, None)
        return web.json_response(body, status=status)
