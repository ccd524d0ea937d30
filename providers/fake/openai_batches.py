"""The OpenAI Batch API on the fake server, for OpenAI and Azure OpenAI.

Routes, under ``/v1`` (OpenAI), ``/openai/v1`` (Azure AI Foundry v1) and
``/openai`` with ``?api-version=`` (Azure OpenAI deployments)::

    POST {root}/files                     upload (multipart, purpose=batch)
    GET  {root}/files/{id}                the file object
    GET  {root}/files/{id}/content        the file's bytes (output, errors)
    POST {root}/batches                   create from an uploaded file
    GET  {root}/batches/{id}              poll
    POST {root}/batches/{id}/cancel       cancel

The input is JSON lines ``{"custom_id", "method": "POST", "url", "body"}``
with one model for the whole file (OpenAI's rule). A malformed file makes
a batch that fails when validation ends, with ``errors`` naming the
lines, as OpenAI does. When a batch ends its results are written to an
output file (answers) and an error file (line errors, and the lines an
expired or cancelled batch never ran: ``batch_expired``,
``batch_cancelled``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from .batch_engine import BatchLine, BatchStore, FakeBatch, LineResult
from .config import FakeConfig
from .openai_wire import OpenAIWire, chat_call
from .wire import WireError

# The endpoints a line's ``url`` may name (Azure drops the ``/v1``).
CHAT_URLS = frozenset({"/v1/chat/completions", "/chat/completions"})
_NOT_RUN = {
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window "
        "expired.",
    ),
    "cancelled": ("batch_cancelled", "The batch was cancelled."),
}
_ERROR_KINDS = {400: "bad_request", 429: "rate_limit"}
Handler = Callable[[web.Request], Awaitable[web.Response]]


class OpenAIBatchRoutes:
    """The files and batches routes of one dialect under one root.

    Args:
        store: The server's batches and files.
        config: The server's behaviours.
        vendor: The counters' key (``openai`` or ``azure_openai``).
        root: The path prefix, e.g. ``/v1``.
        needs_api_version: Whether requests must carry ``api-version``.
        other_poll: Answers a poll of a batch that is not this vendor's
            (Gemini polls ``/v1/batches/{id}`` too), or None.
        other_list: Answers a list that is not this vendor's (Gemini's
            ``GET /v1/batches``, told apart by its key header), or None.
        other_file: Answers ``GET /v1/files/{id}:download`` (Gemini's), or
            None.
    """

    def __init__(
        self,
        store: BatchStore,
        config: FakeConfig,
        vendor: str,
        root: str,
        *,
        needs_api_version: bool,
        other_poll: Handler | None = None,
        other_list: Handler | None = None,
        other_file: Handler | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.vendor = vendor
        self.root = root
        self.needs_api_version = needs_api_version
        self.other_poll = other_poll
        self.other_list = other_list
        self.other_file = other_file
        self.wire = OpenAIWire("openai" if vendor == "openai" else vendor)

    def add_to(self, app: web.Application) -> None:
        """Register the routes."""
        root = self.root
        router = app.router
        router.add_post(f"{root}/files", self._upload)
        router.add_get(f"{root}/files/{{file_id}}", self._file)
        router.add_get(f"{root}/files/{{file_id}}/content", self._content)
        router.add_post(f"{root}/batches", self._create)
        router.add_get(f"{root}/batches", self._list)
        router.add_get(f"{root}/batches/{{batch_id}}", self._retrieve)
        router.add_post(f"{root}/batches/{{batch_id}}/cancel", self._cancel)

    # -- files ------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        if (bad := self._bad_version(request)) is not None:
            return bad
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch":
            return self._error(400, "purpose: only 'batch' is supported")
        if not isinstance(upload, web.FileField):
            return self._error(400, "file: a file part is required")
        data = upload.file.read()
        stored = self.store.add_file("batch", upload.filename, data)
        self.store.count(self.vendor, "files")
        return web.json_response(_file_object(stored))

    async def _file(self, request: web.Request) -> web.Response:
        if (
            self.other_file is not None
            and ":" in request.match_info["file_id"]
        ):
            return await self.other_file(request)
        if (bad := self._bad_version(request)) is not None:
            return bad
        stored = self.store.files.get(request.match_info["file_id"])
        if stored is None:
            return self._error(404, "No such file.")
        return web.json_response(_file_object(stored))

    async def _content(self, request: web.Request) -> web.Response:
        if (bad := self._bad_version(request)) is not None:
            return bad
        stored = self.store.files.get(request.match_info["file_id"])
        if stored is None:
            return self._error(404, "No such file.")
        self.store.count(self.vendor, "downloads")
        return web.Response(
            body=stored.data, content_type="application/octet-stream"
        )

    # -- batches ----------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        if (bad := self._bad_version(request)) is not None:
            return bad
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "the body must be JSON")
        if not isinstance(body, Mapping):
            return self._error(400, "the body must be a JSON object")
        endpoint = body.get("endpoint")
        if endpoint not in CHAT_URLS:
            return self._error(400, "endpoint: only chat completions")
        if body.get("completion_window") != "24h":
            return self._error(400, "completion_window: must be '24h'")
        stored = self.store.files.get(str(body.get("input_file_id")))
        if stored is None or stored.purpose != "batch":
            return self._error(400, "input_file_id: no such batch file")
        lines, failure = _parse_lines(stored.data, endpoint)
        model = next((ln.call.model for ln in lines if ln.call), "unknown")
        behaviours = {model: self.config.behaviour(model)}
        batch = self.store.add(
            FakeBatch(
                id=self.store.new_id("batch_fake_"),
                vendor=self.vendor,
                model=model,
                lines=lines,
                behaviours=behaviours,
                seed=self.config.seed,
                failure=failure,
                extra={
                    "endpoint": endpoint,
                    "input_file_id": stored.id,
                    "metadata": body.get("metadata"),
                },
            )
        )
        return web.json_response(self._render(batch, time.time()))

    async def _list(self, request: web.Request) -> web.Response:
        """Batches, newest first, ``limit`` at a time after ``after``."""
        if self.other_list is not None and "x-goog-api-key" in (
            request.headers
        ):
            return await self.other_list(request)
        if (bad := self._bad_version(request)) is not None:
            return bad
        self.store.count(self.vendor, "lists")
        mine = [
            b
            for b in reversed(self.store.batches.values())
            if b.vendor == self.vendor
        ]
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = max(1, min(100, int(request.query.get("limit", 20))))
        except ValueError:
            return self._error(400, "limit: must be an integer")
        now = time.time()
        page = [self._render(b, now) for b in mine[:limit]]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(mine) > limit,
            }
        )

    async def _retrieve(self, request: web.Request) -> web.Response:
        if (bad := self._bad_version(request)) is not None:
            return bad
        batch = self.store.get(self.vendor, request.match_info["batch_id"])
        if batch is None and self.other_poll is not None:
            return await self.other_poll(request)
        if batch is None:
            return self._error(404, "No such batch.")
        self.store.count(self.vendor, "polls")
        return web.json_response(self._render(batch, time.time()))

    async def _cancel(self, request: web.Request) -> web.Response:
        if (bad := self._bad_version(request)) is not None:
            return bad
        batch = self.store.get(self.vendor, request.match_info["batch_id"])
        if batch is None:
            return self._error(404, "No such batch.")
        now = time.time()
        if batch.phase(now) == "ended":
            return self._error(
                409, f"Cannot cancel a batch with status {batch.phase(now)}."
            )
        batch.cancel(now)
        self.store.count(self.vendor, "cancels")
        rendered = self._render(batch, now)
        # Cancellation is effective at once here; the API first says so.
        rendered["status"] = "cancelling"
        rendered["cancelled_at"] = None
        return web.json_response(rendered)

    # -- rendering --------------------------------------------------------

    def _render(self, batch: FakeBatch, now: float) -> dict[str, Any]:
        outcome = batch.outcome(now)
        ended_at = batch.ended_at(now)
        if outcome is not None:
            self._write_results(batch, now)
        results = batch.results(now)
        succeeded = sum(r.kind == "succeeded" for r in results)
        failed = sum(r.kind == "errored" for r in results)
        status = outcome or batch.phase(now)
        stamp = None if ended_at is None else int(ended_at)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.extra["endpoint"],
            "model": batch.model,
            "errors": _errors(batch.failure) if outcome == "failed" else None,
            "input_file_id": batch.extra["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.extra.get("output_file_id"),
            "error_file_id": batch.extra.get("error_file_id"),
            "created_at": int(batch.created),
            "in_progress_at": (
                int(batch.in_progress_at)
                if now >= batch.in_progress_at and not batch.fails
                else None
            ),
            "expires_at": int(batch.created + 24 * 3600),
            "finalizing_at": stamp if outcome == "completed" else None,
            "completed_at": stamp if outcome == "completed" else None,
            "failed_at": stamp if outcome == "failed" else None,
            "expired_at": stamp if outcome == "expired" else None,
            "cancelling_at": (
                int(batch.cancelled_at) if batch.cancelled_at else None
            ),
            "cancelled_at": stamp if outcome == "cancelled" else None,
            "request_counts": {
                "total": len(batch.lines),
                "completed": (
                    succeeded if outcome else batch.finished_count(now)
                ),
                "failed": failed,
            },
            "metadata": batch.extra.get("metadata"),
        }

    def _write_results(self, batch: FakeBatch, now: float) -> None:
        if "written" in batch.extra:
            return
        batch.extra["written"] = True
        outputs: list[bytes] = []
        errors: list[bytes] = []
        for number, result in enumerate(batch.results(now), 1):
            line = self._result_line(batch, number, result)
            target = outputs if result.kind == "succeeded" else errors
            target.append(json.dumps(line).encode() + b"\n")
        for key, lines in (
            ("output_file_id", outputs),
            ("error_file_id", errors),
        ):
            if lines and not batch.fails:
                stored = self.store.add_file(
                    "batch_output", f"{batch.id}_{key}.jsonl", b"".join(lines)
                )
                batch.extra[key] = stored.id

    def _result_line(
        self, batch: FakeBatch, number: int, result: LineResult
    ) -> dict[str, Any]:
        line: dict[str, Any] = {
            "id": f"batch_req_{batch.id}_{number}",
            "custom_id": result.custom_id,
            "response": None,
            "error": None,
        }
        request_id = f"req_fake_{batch.id}_{number}"
        if result.kind == "succeeded":
            assert result.call is not None and result.answer is not None
            line["response"] = {
                "status_code": 200,
                "request_id": request_id,
                "body": self.wire.completion(result.call, result.answer),
            }
        elif result.kind == "errored":
            kind = _ERROR_KINDS.get(result.status, "server_error")
            line["response"] = {
                "status_code": result.status,
                "request_id": request_id,
                "body": self.wire.error(
                    kind, result.status, result.message, None
                ),
            }
        else:
            code, message = _NOT_RUN[result.kind]
            line["error"] = {"code": code, "message": message}
        return line

    def _bad_version(self, request: web.Request) -> web.Response | None:
        if self.needs_api_version and "api-version" not in request.query:
            return self._error(
                400, "the api-version query parameter is required"
            )
        return None

    def _error(self, status: int, message: str) -> web.Response:
        kind = {400: "bad_request", 404: "bad_request"}.get(
            status, "server_error"
        )
        body = self.wire.error(kind, status, message, None)
        return web.json_response(body, status=status)


def _file_object(stored: Any) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": len(stored.data),
        "created_at": int(stored.created),
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
    }


def _errors(failure: str) -> dict[str, Any]:
    data = [
        {"code": "invalid_request", "message": message, "line": None}
        for message in (failure or "The batch failed (simulated).").split("\n")
    ]
    return {"object": "list", "data": data}


def _parse_lines(data: bytes, endpoint: str) -> tuple[list[BatchLine], str]:
    """Read the input file's lines; the second value says why it is bad."""
    lines: list[BatchLine] = []
    problems: list[str] = []
    seen: set[str] = set()
    models: set[str] = set()
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            problems.append(f"line {number}: not JSON")
            continue
        if not isinstance(doc, Mapping):
            problems.append(f"line {number}: not a JSON object")
            continue
        custom_id = doc.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            problems.append(f"line {number}: custom_id is required")
            continue
        if custom_id in seen:
            problems.append(f"line {number}: custom_id {custom_id} repeats")
            continue
        seen.add(custom_id)
        if doc.get("method") != "POST" or doc.get("url") != endpoint:
            problems.append(f"line {number}: method/url must match endpoint")
            continue
        body = doc.get("body")
        try:
            call = chat_call(body if isinstance(body, Mapping) else {}, None)
        except WireError as exc:
            lines.append(BatchLine(custom_id, None, exc.message))
            continue
        models.add(call.model)
        lines.append(BatchLine(custom_id, call))
    if not lines and not problems:
        problems.append("the input file has no requests")
    if len(models) > 1:
        problems.append("every line of a batch must use the same model")
    return lines, "\n".join(problems)
