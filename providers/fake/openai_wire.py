"""The OpenAI chat-completions wire, in the fake server's three dialects.

``openai``: ``POST /v1/chat/completions`` (and Azure AI Foundry's
``POST /openai/v1/chat/completions``), the model in the body, usage in
the last stream chunk only when ``stream_options.include_usage`` is set.
``azure_openai``: ``POST /openai/deployments/{deployment}/chat/completions
?api-version=...``, the deployment in the path; content-filter refusals as
Azure sends them. ``azure_inference``: ``POST /models/chat/completions
?api-version=...`` (endpoint ``<fake>/models``), usage always in the last
stream chunk.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .behaviour import Fault
from .wire import Answer, ChatCall, WireError, bearer, sse, text_of

_FINISH = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "blocked": "content_filter",
}
_ERROR_TYPES = {
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "server_error": ("server_error", None),
    "bad_request": ("invalid_request_error", None),
    "auth": ("invalid_request_error", "invalid_api_key"),
    "content_filter": (None, "content_filter"),
}


def chat_call(
    body: Mapping[str, Any], model: str | None, api_key: str | None = None
) -> ChatCall:
    """Read a chat-completions body (also a line of a provider batch).

    Args:
        body: The request body.
        model: The model when the path names it; None to read ``model``.
        api_key: The key the caller presented.

    Returns:
        The parsed call.

    Raises:
        WireError: The body is malformed.
    """
    if model is None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError("'model' is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError("'messages' must be a non-empty list")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, Mapping) or "role" not in message:
            raise WireError("each message needs a role")
        text = text_of(message.get("content"))
        if message["role"] in ("system", "developer"):
            system.append(text)
        else:
            turns.append((str(message["role"]), text))
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    options = body.get("stream_options") or {}
    return ChatCall(
        model=model,
        system="\n\n".join(system),
        turns=tuple(turns),
        stream=bool(body.get("stream")),
        include_usage=bool(options.get("include_usage")),
        max_tokens=cap if isinstance(cap, int) else None,
        api_key=api_key,
    )


class OpenAIWire:
    """One dialect of the chat-completions wire.

    Args:
        dialect: ``openai``, ``azure_openai`` or ``azure_inference``.
    """

    auth_status = 401

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def parse(self, request: web.Request, body: Any) -> ChatCall:
        """Read a chat-completions request."""
        if not isinstance(body, Mapping):
            raise WireError("the body must be a JSON object")
        if self.dialect != "openai" and "api-version" not in request.query:
            raise WireError("the api-version query parameter is required")
        model: Any
        if self.dialect == "azure_openai":
            model = request.match_info["deployment"]
        elif self.dialect == "azure_inference":
            model = str(body.get("model") or "default")
        else:
            model = None
        api_key = request.headers.get("api-key") or bearer(request)
        return chat_call(body, model, api_key)

    def _usage(self, answer: Answer) -> dict[str, int]:
        return {
            "prompt_tokens": answer.input_tokens,
            "completion_tokens": answer.output_tokens,
            "total_tokens": answer.input_tokens + answer.output_tokens,
        }

    def _envelope(self, call: ChatCall, answer: Answer, kind: str) -> dict:
        return {
            "id": f"chatcmpl-fake-{answer.number}",
            "object": kind,
            "created": int(time.time()),
            "model": call.model,
        }

    def completion(self, call: ChatCall, answer: Answer) -> dict[str, Any]:
        """Render a ``chat.completion``."""
        return {
            **self._envelope(call, answer, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "finish_reason": _FINISH[answer.finish],
                    "logprobs": None,
                }
            ],
            "usage": self._usage(answer),
        }

    def _chunk(
        self,
        call: ChatCall,
        answer: Answer,
        delta: Mapping[str, Any],
        finish: str | None = None,
    ) -> dict[str, Any]:
        return {
            **self._envelope(call, answer, "chat.completion.chunk"),
            "choices": [
                {"index": 0, "delta": dict(delta), "finish_reason": finish}
            ],
        }

    def stream_head(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """The role chunk."""
        delta = {"role": "assistant", "content": ""}
        return [sse(self._chunk(call, answer, delta))]

    def stream_piece(
        self, call: ChatCall, answer: Answer, piece: str
    ) -> bytes:
        """One content delta."""
        return sse(self._chunk(call, answer, {"content": piece}))

    def stream_tail(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """The finish chunk, then usage as each dialect sends it."""
        finish = self._chunk(call, answer, {}, _FINISH[answer.finish])
        if self.dialect == "azure_inference":
            return [sse({**finish, "usage": self._usage(answer)})]
        frames = [sse(finish)]
        if call.include_usage:
            usage = {
                **self._envelope(call, answer, "chat.completion.chunk"),
                "choices": [],
                "usage": self._usage(answer),
            }
            frames.append(sse(usage))
        return frames

    def stream_end(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """``data: [DONE]``."""
        return [sse("[DONE]")]

    def stream_error(self, status: int, message: str) -> bytes:
        """An ``error`` object inside the stream."""
        kind = "rate_limit" if status == 429 else "server_error"
        return sse(self.error(kind, status, message, None))

    def error(
        self, kind: str, status: int, message: str, fault: Fault | None
    ) -> dict[str, Any]:
        """The dialect's error body."""
        error_type, code = _ERROR_TYPES.get(kind, ("server_error", None))
        if self.dialect != "openai":
            # Azure puts a code (often the status) where OpenAI has a type.
            return {
                "error": {
                    "code": code or str(status),
                    "message": message,
                    "status": status,
                }
            }
        return {
            "error": {
                "message": message,
                "type": error_type,
                "param": None,
                "code": code,
            }
        }

    def blocked_prompt(self) -> tuple[int, dict[str, Any]] | None:
        """Azure's content-filter 400 (OpenAI's own is the same shape)."""
        message = (
            "The response was filtered due to the prompt triggering the "
            "content management policy."
        )
        body = self.error("content_filter", 400, message, None)
        if self.dialect == "azure_openai":
            body["error"]["innererror"] = {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "violence": {"filtered": True, "severity": "high"}
                },
            }
        return 400, body
