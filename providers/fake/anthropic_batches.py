"""Anthropic Message Batches on the fake server.

Routes::

    POST /v1/messages/batches                  create {requests: [...]}
    GET  /v1/messages/batches                  list, newest first
    GET  /v1/messages/batches/{id}             poll
    POST /v1/messages/batches/{id}/cancel      cancel
    GET  /v1/messages/batches/{id}/results     JSON lines, once ended

Each request is ``{custom_id, params}`` with Messages parameters; a
request whose params are malformed ends ``errored`` (Anthropic checks
params per request), while a malformed envelope (ids, shape) is a 400 for
the whole call. ``processing_status`` goes ``in_progress`` → ``ended``
(``canceling`` right after a cancel); results are ``succeeded``,
``errored``, ``expired`` or ``canceled``. A batch whose behaviour says
``failed`` ends with every request ``errored`` (the API has no failed
batches).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .anthropic_wire import AnthropicWire
from .batch_engine import (
    BatchLine,
    BatchStore,
    FakeBatch,
    LineResult,
    iso_stamp,
)
from .config import FakeConfig
from .wire import WireError

VENDOR = "anthropic"
_ROOT = "/v1/messages/batches"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ERROR_KINDS = {400: "bad_request", 429: "rate_limit"}
_RESULT_TYPES = {
    "succeeded": "succeeded",
    "errored": "errored",
    "expired": "expired",
    "cancelled": "canceled",
}


class AnthropicBatchRoutes:
    """The Message Batches routes.

    Args:
        store: The server's batches.
        config: The server's behaviours.
    """

    def __init__(self, store: BatchStore, config: FakeConfig) -> None:
        self.store = store
        self.config = config
        self.wire = AnthropicWire()

    def add_to(self, app: web.Application) -> None:
        """Register the routes."""
        router = app.router
        router.add_post(_ROOT, self._create)
        router.add_get(_ROOT, self._list)
        router.add_get(f"{_ROOT}/{{batch_id}}", self._retrieve)
        router.add_post(f"{_ROOT}/{{batch_id}}/cancel", self._cancel)
        router.add_get(f"{_ROOT}/{{batch_id}}/results", self._results)

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "the body must be JSON")
        requests = body.get("requests") if isinstance(body, Mapping) else None
        if not isinstance(requests, list) or not requests:
            return self._error(400, "requests: Field required")
        lines: list[BatchLine] = []
        seen: set[str] = set()
        for index, item in enumerate(requests):
            where = f"requests.{index}"
            if not isinstance(item, Mapping):
                return self._error(400, f"{where}: must be an object")
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(
                custom_id
            ):
                return self._error(
                    400, f"{where}.custom_id: must match {_CUSTOM_ID.pattern}"
                )
            if custom_id in seen:
                return self._error(
                    400, f"{where}.custom_id: {custom_id} is not unique"
                )
            seen.add(custom_id)
            lines.append(self._line(custom_id, item.get("params"), request))
        model = next((ln.call.model for ln in lines if ln.call), "unknown")
        models = {ln.call.model for ln in lines if ln.call} | {model}
        batch = self.store.add(
            FakeBatch(
                id=self.store.new_id("msgbatch_fake_"),
                vendor=VENDOR,
                model=model,
                lines=lines,
                behaviours={m: self.config.behaviour(m) for m in models},
                seed=self.config.seed,
            )
        )
        return web.json_response(self._render(batch, time.time(), request))

    def _line(
        self, custom_id: str, params: Any, request: web.Request
    ) -> BatchLine:
        if isinstance(params, Mapping) and params.get("stream"):
            return BatchLine(custom_id, None, "params.stream: not allowed")
        try:
            call = self.wire.parse(request, params)
        except WireError as exc:
            return BatchLine(custom_id, None, f"params.{exc.message}")
        return BatchLine(custom_id, call)

    async def _list(self, request: web.Request) -> web.Response:
        """Batches, newest first, ``limit`` at a time after ``after_id``."""
        self.store.count(VENDOR, "lists")
        mine = [
            b
            for b in reversed(self.store.batches.values())
            if b.vendor == VENDOR
        ]
        after = request.query.get("after_id")
        if after is not None:
            ids = [b.id for b in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = max(1, min(1000, int(request.query.get("limit", 20))))
        except ValueError:
            return self._error(400, "limit: must be an integer")
        now = time.time()
        page = [self._render(b, now, request) for b in mine[:limit]]
        return web.json_response(
            {
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(mine) > limit,
            }
        )

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.store.get(VENDOR, request.match_info["batch_id"])
        if batch is None:
            return self._error(404, "No such message batch.")
        self.store.count(VENDOR, "polls")
        return web.json_response(self._render(batch, time.time(), request))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.store.get(VENDOR, request.match_info["batch_id"])
        if batch is None:
            return self._error(404, "No such message batch.")
        now = time.time()
        batch.cancel(now)
        self.store.count(VENDOR, "cancels")
        rendered = self._render(batch, now, request)
        if batch.cancelled_at == now:
            # The API answers a cancel while the batch winds down.
            rendered["processing_status"] = "canceling"
            rendered["ended_at"] = None
            rendered["results_url"] = None
        return web.json_response(rendered)

    async def _results(self, request: web.Request) -> web.StreamResponse:
        batch = self.store.get(VENDOR, request.match_info["batch_id"])
        if batch is None:
            return self._error(404, "No such message batch.")
        now = time.time()
        if batch.phase(now) != "ended":
            return self._error(400, "The batch is still in progress.")
        self.store.count(VENDOR, "downloads")
        body = b"".join(
            json.dumps(self._result(batch, r)).encode() + b"\n"
            for r in batch.results(now)
        )
        return web.Response(body=body, content_type="application/binary")

    def _result(self, batch: FakeBatch, result: LineResult) -> dict[str, Any]:
        line: dict[str, Any] = {"custom_id": result.custom_id}
        kind = result.kind
        if batch.fails:
            status, message = 500, "The batch failed (simulated)."
            kind = "errored"
        else:
            status, message = result.status, result.message
        if kind == "succeeded":
            assert result.call is not None and result.answer is not None
            message_body = self.wire.completion(result.call, result.answer)
            line["result"] = {"type": "succeeded", "message": message_body}
        elif kind == "errored":
            error_kind = _ERROR_KINDS.get(status, "server_error")
            line["result"] = {
                "type": "errored",
                "error": self.wire.error(error_kind, status, message, None),
            }
        else:
            line["result"] = {"type": _RESULT_TYPES[kind]}
        return line

    def _render(
        self, batch: FakeBatch, now: float, request: web.Request
    ) -> dict[str, Any]:
        ended_at = batch.ended_at(now)
        counts = {
            "processing": len(batch.lines),
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        results_url = None
        if ended_at is not None:
            counts["processing"] = 0
            for result in batch.results(now):
                kind = "errored" if batch.fails else result.kind
                counts[_RESULT_TYPES[kind]] += 1
            results_url = (
                f"{request.scheme}://{request.host}{_ROOT}/{batch.id}/results"
            )
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended_at else "in_progress",
            "request_counts": counts,
            "created_at": iso_stamp(batch.created),
            "expires_at": iso_stamp(batch.created + 24 * 3600),
            "ended_at": iso_stamp(ended_at),
            "cancel_initiated_at": iso_stamp(batch.cancelled_at),
            "archived_at": None,
            "results_url": results_url,
        }

    def _error(self, status: int, message: str) -> web.Response:
        kind = "bad_request" if status < 500 else "server_error"
        body = self.wire.error(kind, status, message, None)
        if status == 404:
            body["error"]["type"] = "not_found_error"
        return web.json_response(body, status=status)
