"""The Gemini API wire: ``POST /{version}/models/{model}:generateContent``.

Streams use ``:streamGenerateContent?alt=sse``: every chunk carries
``usageMetadata`` so far and the last one carries the ``finishReason``
(the stream's end marker). Errors are Google RPC statuses; a rate limit
carries a ``google.rpc.RetryInfo`` detail, a bad key is a 400 with
reason ``API_KEY_INVALID``, and a refused prompt is a 200 with
``promptFeedback.blockReason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from .behaviour import Fault
from .wire import Answer, ChatCall, WireError, sse

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _parts_text(content: Any) -> str:
    if not isinstance(content, Mapping):
        return ""
    parts = content.get("parts") or []
    return "".join(
        str(p.get("text", "")) for p in parts if isinstance(p, Mapping)
    )


def gemini_call(
    body: Mapping[str, Any], model: str, api_key: str | None = None
) -> ChatCall:
    """Read a ``GenerateContentRequest`` (also one of a batch).

    Args:
        body: The request.
        model: The model id, without ``models/``.
        api_key: The key the caller presented.

    Returns:
        The parsed call (not streaming).

    Raises:
        WireError: The request is malformed.
    """
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise WireError("contents is not specified")
    system = body.get("systemInstruction", body.get("system_instruction"))
    config = body.get("generationConfig", body.get("generation_config"))
    config = config if isinstance(config, Mapping) else {}
    cap = config.get("maxOutputTokens", config.get("max_output_tokens"))
    turns = tuple(
        (
            "user" if c.get("role", "user") == "user" else "assistant",
            _parts_text(c),
        )
        for c in contents
        if isinstance(c, Mapping)
    )
    return ChatCall(
        model=model,
        system=_parts_text(system),
        turns=turns,
        stream=False,
        max_tokens=cap if isinstance(cap, int) else None,
        api_key=api_key,
    )


class GeminiWire:
    """The Gemini ``generateContent`` wire format."""

    # Google reports a bad key as INVALID_ARGUMENT, not 401.
    auth_status = 400

    def parse(self, request: web.Request, body: Any) -> ChatCall:
        """Read a ``generateContent`` request (model, action in the path)."""
        if not isinstance(body, Mapping):
            raise WireError("the body must be a JSON object")
        model, _, action = request.match_info["model_action"].partition(":")
        if action not in ("generateContent", "streamGenerateContent"):
            raise WireError(f"unknown method {action!r}", status=404)
        api_key = request.headers.get("x-goog-api-key") or request.query.get(
            "key"
        )
        call = gemini_call(body, model.removeprefix("models/"), api_key)
        if action == "streamGenerateContent":
            return replace(call, stream=True)
        return call

    def _usage(self, answer: Answer, output: int) -> dict[str, int]:
        return {
            "promptTokenCount": answer.input_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": answer.input_tokens + output,
        }

    def _envelope(self, call: ChatCall, answer: Answer) -> dict[str, Any]:
        return {
            "modelVersion": call.model,
            "responseId": f"fake-{answer.number}",
        }

    def _candidate(self, text: str, finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "index": 0,
        }
        if finish:
            candidate["finishReason"] = finish
        return candidate

    def _blocked(self, call: ChatCall, answer: Answer) -> dict[str, Any]:
        return {
            **self._envelope(call, answer),
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {
                "promptTokenCount": answer.input_tokens,
                "totalTokenCount": answer.input_tokens,
            },
        }

    def completion(self, call: ChatCall, answer: Answer) -> dict[str, Any]:
        """Render a whole ``GenerateContentResponse``."""
        if answer.finish == "blocked":
            return self._blocked(call, answer)
        return {
            **self._envelope(call, answer),
            "candidates": [
                self._candidate(answer.text, _FINISH[answer.finish])
            ],
            "usageMetadata": self._usage(answer, answer.output_tokens),
        }

    def stream_head(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """Nothing: Gemini streams start with the first text."""
        return []

    def stream_piece(
        self, call: ChatCall, answer: Answer, piece: str
    ) -> bytes:
        """A chunk with one piece and the usage so far."""
        chunk = {
            **self._envelope(call, answer),
            "candidates": [self._candidate(piece, None)],
            "usageMetadata": {"promptTokenCount": answer.input_tokens},
        }
        return sse(chunk)

    def stream_tail(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """Nothing: the last chunk is itself the end marker."""
        return []

    def stream_end(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """The last chunk: the finish reason and the complete usage."""
        if answer.finish == "blocked":
            return [sse(self._blocked(call, answer))]
        chunk = {
            **self._envelope(call, answer),
            "candidates": [self._candidate("", _FINISH[answer.finish])],
            "usageMetadata": self._usage(answer, answer.output_tokens),
        }
        return [sse(chunk)]

    def stream_error(self, status: int, message: str) -> bytes:
        """An ``error`` object inside the stream."""
        kind = "rate_limit" if status == 429 else "server_error"
        return sse(self.error(kind, status, message, None))

    def error(
        self, kind: str, status: int, message: str, fault: Fault | None
    ) -> dict[str, Any]:
        """A Google RPC status body."""
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _STATUS.get(status, "UNKNOWN"),
        }
        if kind == "auth":
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ]
        elif fault is not None and fault.retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{fault.retry_after:g}s",
                }
            ]
        return {"error": error}

    def blocked_prompt(self) -> tuple[int, dict[str, Any]] | None:
        """None: a blocked prompt is a 200 with ``promptFeedback``."""
        return None
