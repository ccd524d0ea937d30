"""The fake provider's HTTP application: vendor routes and control routes.

Vendor routes (each in its vendor's wire format, streaming or not)::

    POST /v1/chat/completions                              OpenAI
    POST /openai/v1/chat/completions                       Azure AI Foundry v1
    POST /openai/deployments/{deployment}/chat/completions Azure OpenAI
    POST /models/chat/completions                          Azure AI Inference
    POST /v1/messages                                      Anthropic
    POST /{version}/models/{model}:generateContent         Gemini
    POST /{version}/models/{model}:streamGenerateContent   Gemini (SSE)

Provider batches (:mod:`providers.fake.openai_batches`,
:mod:`providers.fake.anthropic_batches`,
:mod:`providers.fake.gemini_batches`): OpenAI's files and batches under
``/v1``, Azure OpenAI's under ``/openai`` and ``/openai/v1``, Anthropic's
``/v1/messages/batches`` and Gemini's ``:batchGenerateContent`` and
``/{version}/batches``. Their call counters are under ``batches`` in the
stats.

Control routes: ``GET /_fake/stats``, ``POST /_fake/reset``,
``GET``/``POST /_fake/config``, ``GET /_fake/health``. A request its vendor
would reject as malformed gets the vendor's 400 and is not counted.

A request is counted in flight from its arrival (before its latency) until
its last byte or its client's disconnect, so ``maxInFlight`` is exactly the
concurrency a client's limiter allowed. Everything is ``asyncio``: no call
blocks the loop, so one process serves hundreds of requests per second.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .anthropic_batches import AnthropicBatchRoutes
from .anthropic_wire import AnthropicWire
from .batch_engine import BatchStore
from .behaviour import ERROR_FAULTS, Behaviour, BehaviourError, Fault
from .config import FakeConfig
from .gemini_batches import GeminiBatchRoutes
from .gemini_wire import GeminiWire
from .openai_batches import OpenAIBatchRoutes
from .openai_wire import OpenAIWire
from .stats import ModelStats, StatsBook
from .wire import Answer, ChatCall, Wire, WireError, compose_answer

_DEFAULT_STATUS = {"rate_limit": 429, "server_error": 500, "bad_request": 400}
_MESSAGES = {
    "rate_limit": "Rate limit reached (simulated by the fake provider).",
    "server_error": "The server had an error (simulated).",
    "bad_request": "Invalid request (simulated).",
    "auth": "Incorrect API key provided (simulated).",
    "stream_error": "Overloaded (simulated).",
    "stream_rate_limit": "Rate limit reached mid-stream (simulated).",
}
_JSON = "application/json"
# Batch input files may be large (OpenAI takes up to 200 MB).
_MAX_BODY_BYTES = 256 * 2**20
_GEMINI_BATCH = ":batchGenerateContent"


class FakeProviderApp:
    """The state and handlers behind one fake server.

    Args:
        config: The behaviours; a fresh default one when None.
    """

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.book = StatsBook(self.config.seed)
        self.batches = BatchStore()
        self._gemini_wire = GeminiWire()
        self._gemini_batches = GeminiBatchRoutes(self.batches, self.config)

    def build(self) -> web.Application:
        """Make the aiohttp application with every route."""
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        chat = self._chat
        # Batch routes first: /v1/messages/batches before /v1/messages.
        for vendor, root, dated in (
            ("openai", "/v1", False),
            ("azure_openai", "/openai/v1", False),
            ("azure_openai", "/openai", True),
        ):
            OpenAIBatchRoutes(
                self.batches,
                self.config,
                vendor,
                root,
                needs_api_version=dated,
                other_poll=(
                    self._gemini_batches.retrieve if root == "/v1" else None
                ),
                other_list=(
                    self._gemini_batches.list_batches
                    if root == "/v1"
                    else None
                ),
                other_file=(
                    self._gemini_batches.download_v1 if root == "/v1" else None
                ),
            ).add_to(app)
        AnthropicBatchRoutes(self.batches, self.config).add_to(app)
        self._gemini_batches.add_to(app)
        routes: list[tuple[str, Wire]] = [
            ("/v1/chat/completions", OpenAIWire("openai")),
            ("/openai/v1/chat/completions", OpenAIWire("openai")),
            (
                "/openai/deployments/{deployment}/chat/completions",
                OpenAIWire("azure_openai"),
            ),
            ("/models/chat/completions", OpenAIWire("azure_inference")),
            ("/v1/messages", AnthropicWire()),
        ]
        for path, wire in routes:
            app.router.add_post(path, _bound(chat, wire))
        app.router.add_post(
            "/{version}/models/{model_action}", self._gemini_models
        )
        app.router.add_get("/_fake/stats", self._stats)
        app.router.add_post("/_fake/reset", self._reset)
        app.router.add_get("/_fake/config", self._get_config)
        app.router.add_post("/_fake/config", self._set_config)
        app.router.add_get("/_fake/health", self._health)
        return app

    # -- control ----------------------------------------------------------

    def configure(self, document: dict[str, Any]) -> dict[str, Any]:
        """Apply a configuration document; a new seed resets the stats.

        Args:
            document: See :mod:`providers.fake.config`.

        Returns:
            The resulting configuration document.

        Raises:
            BehaviourError: The document is invalid (nothing changed).
        """
        old_seed = self.config.seed
        self.config.update(document)
        if self.config.seed != old_seed:
            self.book.reset(self.config.seed)
        return self.config.to_document()

    def stats(self) -> dict[str, Any]:
        """Every model's counters and the batch calls per vendor."""
        return {**self.book.to_json(), "batches": self.batches.to_json()}

    def reset(self) -> None:
        """Forget every counter, batch and file."""
        self.book.reset()
        self.batches.reset()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.to_document())

    async def _set_config(self, request: web.Request) -> web.Response:
        try:
            document = await request.json()
            return web.json_response(self.configure(document))
        except (ValueError, BehaviourError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # -- vendor calls -----------------------------------------------------

    async def _gemini_models(self, request: web.Request) -> web.StreamResponse:
        model_action = request.match_info["model_action"]
        if model_action.endswith(_GEMINI_BATCH):
            model = model_action.removesuffix(_GEMINI_BATCH)
            return await self._gemini_batches.create(
                request, model.removeprefix("models/")
            )
        return await self._chat(request, self._gemini_wire)

    async def _chat(
        self, request: web.Request, wire: Wire
    ) -> web.StreamResponse:
        try:
            call = wire.parse(request, await request.json())
        except ValueError:
            return await _send_json(
                request, 400, wire.error("bad_request", 400, "not JSON", None)
            )
        except WireError as exc:
            kind = "bad_request" if exc.status == 400 else "not_found"
            body = wire.error(kind, exc.status, exc.message, None)
            return await _send_json(request, exc.status, body)
        state = self.book.model(call.model)
        stats = state.stats
        behaviour = self.config.behaviour(call.model)
        number = stats.begin(time.time())
        try:
            fault = behaviour.pick_fault(
                number, state.fault_rng, streaming=call.stream
            )
            if fault is not None:
                stats.faults[fault.kind] += 1
            await asyncio.sleep(behaviour.latency_seconds(state.latency_rng))
            response = await self._respond(
                request, wire, call, behaviour, fault, number
            )
            stats.statuses[response.status] += 1
            return response
        except (asyncio.CancelledError, ConnectionError):
            stats.disconnects += 1
            raise
        finally:
            stats.end()

    async def _respond(
        self,
        request: web.Request,
        wire: Wire,
        call: ChatCall,
        behaviour: Behaviour,
        fault: Fault | None,
        number: int,
    ) -> web.StreamResponse:
        if behaviour.api_key is not None and call.api_key != behaviour.api_key:
            return await self._error(request, wire, "auth", None)
        if fault is not None and fault.kind in ERROR_FAULTS:
            return await self._error(request, wire, fault.kind, fault)
        answer = compose_answer(behaviour, call, number, fault)
        if answer.finish == "blocked":
            blocked = wire.blocked_prompt()
            if blocked is not None:
                return await _send_json(request, *blocked)
        first_byte_ms = behaviour.first_byte_delay_ms
        if fault is not None and fault.kind == "slow_first_byte":
            first_byte_ms += fault.delay_ms
        if call.stream:
            return await _stream(
                request, wire, call, answer, behaviour, fault, first_byte_ms
            )
        body = json.dumps(wire.completion(call, answer)).encode()
        cut = fault is not None and fault.kind == "cut_stream"
        return await _send_bytes(request, 200, body, first_byte_ms, cut=cut)

    async def _error(
        self,
        request: web.Request,
        wire: Wire,
        kind: str,
        fault: Fault | None,
    ) -> web.StreamResponse:
        default = wire.auth_status if kind == "auth" else _DEFAULT_STATUS[kind]
        status = fault.status if fault and fault.status else default
        headers = {}
        if fault is not None and fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault is not None and fault.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
        body = wire.error(kind, status, _MESSAGES[kind], fault)
        return await _send_json(request, status, body, headers)

    def stats_of(self, model: str) -> ModelStats:
        """Return one model's counters (created empty if never called)."""
        return self.book.model(model).stats


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bound(
    handler: Callable[[web.Request, Wire], Awaitable[web.StreamResponse]],
    wire: Wire,
) -> _Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request, wire)

    return route


def _cut(request: web.Request) -> None:
    """Drop the connection mid-body, as a crashed upstream would."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def _send_json(
    request: web.Request,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    data = json.dumps(body).encode()
    return await _send_bytes(request, status, data, 0.0, headers=headers)


async def _send_bytes(
    request: web.Request,
    status: int,
    data: bytes,
    first_byte_ms: float,
    *,
    headers: dict[str, str] | None = None,
    cut: bool = False,
) -> web.StreamResponse:
    # Written inside the handler (not returned for aiohttp to write) so the
    # request stays in flight until its last byte is out.
    response = web.StreamResponse(
        status=status, headers={"Content-Type": _JSON, **(headers or {})}
    )
    response.content_length = len(data)
    await response.prepare(request)
    if first_byte_ms:
        await asyncio.sleep(first_byte_ms / 1000.0)
    if cut:
        await response.write(data[: len(data) // 2])
        _cut(request)
        return response
    await response.write(data)
    await response.write_eof()
    return response


async def _stream(
    request: web.Request,
    wire: Wire,
    call: ChatCall,
    answer: Answer,
    behaviour: Behaviour,
    fault: Fault | None,
    first_byte_ms: float,
) -> web.StreamResponse:
    kind = fault.kind if fault is not None else None
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
        },
    )
    await response.prepare(request)
    if first_byte_ms:
        await asyncio.sleep(first_byte_ms / 1000.0)
    pieces = answer.pieces()
    stop_at = len(pieces)
    if fault is not None and kind in ("cut_stream", "stream_error"):
        after = fault.after_tokens
        stop_at = min(
            len(pieces), len(pieces) // 2 if after is None else after
        )
    tps = behaviour.stream_tokens_per_second
    # Frames are batched between pauses: one write per token only when
    # pacing asks for it, so unpaced streams cost few syscalls.
    pending = bytearray(b"".join(wire.stream_head(call, answer)))
    for piece in pieces[:stop_at]:
        if tps:
            if pending:
                await response.write(bytes(pending))
                pending.clear()
            await asyncio.sleep(1.0 / tps)
        pending += wire.stream_piece(call, answer, piece)
    if kind == "cut_stream":
        await response.write(bytes(pending))
        _cut(request)
        return response
    if kind == "stream_error":
        status = fault.status if fault and fault.status else 503
        key = "stream_rate_limit" if status == 429 else "stream_error"
        pending += wire.stream_error(status, _MESSAGES[key])
    else:
        for frame in wire.stream_tail(call, answer):
            pending += frame
        if kind != "no_end_marker":
            for frame in wire.stream_end(call, answer):
                pending += frame
    await response.write(bytes(pending))
    await response.write_eof()
    return response
