"""The Anthropic Messages wire: ``POST /v1/messages``.

Streams are named events: ``message_start`` (input tokens), content block
events with ``text_delta`` pieces, ``message_delta`` (stop reason and
output tokens) and the end marker ``message_stop``; errors inside a
stream are ``event: error``. Anthropic has no content-filter error: a
refused prompt is a normal answer with ``stop_reason: refusal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .behaviour import Fault
from .wire import Answer, ChatCall, WireError, bearer, sse, text_of

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "blocked": "refusal",
}
_ERROR_TYPES = {
    "rate_limit": "rate_limit_error",
    "bad_request": "invalid_request_error",
    "auth": "authentication_error",
    "content_filter": "invalid_request_error",
}


def _server_error_type(status: int) -> str:
    return "overloaded_error" if status in (503, 529) else "api_error"


class AnthropicWire:
    """The Messages API wire format."""

    auth_status = 401

    def parse(self, request: web.Request, body: Any) -> ChatCall:
        """Read a Messages request."""
        if not isinstance(body, Mapping):
            raise WireError("the body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError("model: Field required")
        cap = body.get("max_tokens")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise WireError("max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise WireError("messages: Field required")
        system = [text_of(body.get("system"))] if body.get("system") else []
        turns: list[tuple[str, str]] = []
        for message in messages:
            if not isinstance(message, Mapping) or "role" not in message:
                raise WireError("messages: each message needs a role")
            text = text_of(message.get("content"))
            if message["role"] == "system":
                system.append(text)
            else:
                turns.append((str(message["role"]), text))
        return ChatCall(
            model=model,
            system="\n\n".join(system),
            turns=tuple(turns),
            stream=bool(body.get("stream")),
            max_tokens=cap,
            api_key=request.headers.get("x-api-key") or bearer(request),
        )

    def _message(self, call: ChatCall, answer: Answer) -> dict[str, Any]:
        return {
            "id": f"msg_fake_{answer.number}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": 1},
        }

    def completion(self, call: ChatCall, answer: Answer) -> dict[str, Any]:
        """Render a whole ``message``."""
        content = (
            [{"type": "text", "text": answer.text}] if answer.words else []
        )
        return {
            **self._message(call, answer),
            "content": content,
            "stop_reason": _STOP[answer.finish],
            "usage": {
                "input_tokens": answer.input_tokens,
                "output_tokens": answer.output_tokens,
            },
        }

    def stream_head(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """``message_start``, the text block's start and a ``ping``."""
        start = {
            "type": "message_start",
            "message": self._message(call, answer),
        }
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        return [
            sse(start, "message_start"),
            sse(block, "content_block_start"),
            sse({"type": "ping"}, "ping"),
        ]

    def stream_piece(
        self, call: ChatCall, answer: Answer, piece: str
    ) -> bytes:
        """One ``text_delta``."""
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        return sse(delta, "content_block_delta")

    def stream_tail(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """The block's stop, then ``message_delta`` with the output usage."""
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP[answer.finish],
                "stop_sequence": None,
            },
            "usage": {"output_tokens": answer.output_tokens},
        }
        stop = {"type": "content_block_stop", "index": 0}
        return [sse(stop, "content_block_stop"), sse(delta, "message_delta")]

    def stream_end(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """``message_stop``."""
        return [sse({"type": "message_stop"}, "message_stop")]

    def stream_error(self, status: int, message: str) -> bytes:
        """``event: error`` (overloaded, or a rate limit for 429)."""
        kind = "rate_limit" if status == 429 else "server_error"
        return sse(self.error(kind, status, message, None), "error")

    def error(
        self, kind: str, status: int, message: str, fault: Fault | None
    ) -> dict[str, Any]:
        """The ``{"type": "error", "error": {...}}`` body."""
        error_type = _ERROR_TYPES.get(kind) or _server_error_type(status)
        return {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_fake",
        }

    def blocked_prompt(self) -> tuple[int, dict[str, Any]] | None:
        """None: a refusal is an ordinary answer on this wire."""
        return None
