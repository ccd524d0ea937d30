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
as ``line-{index}`` when there is none.

A batch may instead read an uploaded JSON lines file
(``inputConfig.fileName``, lines ``{"key", "request"}``); its output is
then a file too (``responsesFile``, lines ``{"key", "response"}`` or
``{"key", "error"}``), and lines are named by their key. Files use the
resumable upload protocol and the download route::

    POST /upload/{version}/files                 start, then ?upload_id=
    GET  /{version}/files/{id}:download?alt=media
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .batch_engine import (
    BatchLine,
    BatchStore,
    FakeBatch,
    LineResult,
    iso_stamp,
)
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
        self._uploads: dict[str, dict[str, Any]] = {}

    def add_to(self, app: web.Application) -> None:
        """Register the poll and cancel routes.

        Creation shares the path of ``generateContent``, and polls under
        ``/v1`` share OpenAI's path: the app dispatches those.
        """
        app.router.add_post("/upload/{version}/files", self.upload)
        app.router.add_get("/{version}/files/{file_action}", self.download)
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
        key = request.headers.get("x-goog-api-key")
        items: Any
        file_name = config.get("fileName")
        if file_name is not None:
            stored = self.store.files.get(
                str(file_name).removeprefix("files/")
            )
            if stored is None:
                return self._error(400, f"inputConfig.fileName: {file_name}")
            try:
                items = [json.loads(raw) for raw in stored.data.splitlines()]
            except ValueError:
                return self._error(400, "the input file is not JSON lines")
        else:
            holder = config.get("requests")
            items = (
                holder.get("requests") if isinstance(holder, Mapping) else None
            )
        if not isinstance(items, list) or not items:
            return self._error(400, "batch.inputConfig.requests is empty")
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
                    "fileSource": file_name is not None,
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
        if item.get("key"):
            custom_id = str(item["key"])
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
            "createTime": iso_stamp(batch.created),
            "updateTime": iso_stamp(now),
            "batchStats": {
                "requestCount": str(len(batch.lines)),
                "successfulRequestCount": str(succeeded),
                "failedRequestCount": str(failed),
                "pendingRequestCount": str(0 if outcome else len(batch.lines)),
            },
        }
        operation: dict[str, Any] = {"name": name, "metadata": metadata}
        if outcome is not None:
            metadata["endTime"] = iso_stamp(batch.ended_at(now))
            operation["done"] = True
        if outcome == "completed" and batch.extra["fileSource"]:
            output: dict[str, Any] = {
                "responsesFile": self._output_file(batch, results)
            }
        elif outcome == "completed":
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
        if outcome == "completed":
            metadata["output"] = output
            operation["response"] = {
                "@type": _TYPE + "GenerateContentBatchOutput",
                **output,
            }
        elif outcome == "failed":
            operation["error"] = {"code": 13, "message": "Batch failed."}
        return operation

    def _output_file(self, batch: FakeBatch, results: list[LineResult]) -> str:
        """Write (once) the responses file of a file-sourced batch."""
        if "responsesFile" not in batch.extra:
            lines = []
            for result in results:
                line = self._response(result, None)
                line["key"] = result.custom_id
                lines.append(json.dumps(line).encode() + b"\n")
            stored = self.store.add_file(
                "batch_output", f"{batch.id}.jsonl", b"".join(lines)
            )
            batch.extra["responsesFile"] = f"files/{stored.id}"
        name: str = batch.extra["responsesFile"]
        return name

    # -- files --------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        """The resumable upload: a start, then the bytes (one chunk here)."""
        upload_id = request.query.get("upload_id")
        if upload_id is None:
            if request.headers.get("X-Goog-Upload-Command") != "start":
                return self._error(400, "X-Goog-Upload-Command: start first")
            body = await request.json()
            meta = body.get("file") if isinstance(body, Mapping) else None
            upload_id = self.store.new_id("upload-")
            self._uploads[upload_id] = dict(meta or {})
            url = (
                f"{request.scheme}://{request.host}{request.path}"
                f"?upload_id={upload_id}"
            )
            return web.json_response(
                {},
                headers={
                    "X-Goog-Upload-URL": url,
                    "X-Goog-Upload-Status": "active",
                },
            )
        meta = self._uploads.pop(upload_id, None)
        if meta is None:
            return self._error(404, "No such upload.")
        command = request.headers.get("X-Goog-Upload-Command", "")
        if "finalize" not in command:
            return self._error(400, "uploads here take one chunk")
        data = await request.read()
        stored = self.store.add_file(
            "batch", str(meta.get("displayName") or "upload"), data
        )
        self.store.count(VENDOR, "files")
        name = f"files/{stored.id}"
        file_doc = {
            "name": name,
            "displayName": meta.get("displayName"),
            "mimeType": meta.get("mimeType", "application/jsonl"),
            "sizeBytes": str(len(data)),
            "state": "ACTIVE",
            "uri": f"{request.scheme}://{request.host}/v1beta/{name}",
        }
        return web.json_response(
            {"file": file_doc}, headers={"X-Goog-Upload-Status": "final"}
        )

    async def download(self, request: web.Request) -> web.Response:
        """``files/{id}:download``: a file's bytes."""
        return self._download(request.match_info["file_action"])

    async def download_v1(self, request: web.Request) -> web.Response:
        """The same under ``/v1``, where OpenAI's file route matches first."""
        return self._download(request.match_info["file_id"])

    def _download(self, file_action: str) -> web.Response:
        file_id, _, action = file_action.partition(":")
        stored = self.store.files.get(file_id)
        if action != "download" or stored is None:
            return self._error(404, "File not found.")
        self.store.count(VENDOR, "downloads")
        return web.Response(
            body=stored.data, content_type="application/octet-stream"
        )

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
