"""What every vendor wire format of the fake server shares.

A wire format parses a vendor's request into a :class:`ChatCall` and
renders an :class:`Answer` (whole, or as stream frames) and errors in the
vendor's own JSON, so the real SDKs parse them. Tokens are counted
deterministically: whitespace-separated words, at least one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from .behaviour import Behaviour, Fault


def count_tokens(text: str) -> int:
    """Count the fake's tokens: whitespace-separated words, at least 1."""
    return max(1, len(text.split()))


class WireError(Exception):
    """The request is malformed for its vendor (rendered as a 400).

    Args:
        message: What is wrong.
        status: The HTTP status to answer with.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A parsed chat request, vendor-neutral.

    Attributes:
        model: The upstream model id (the stats and behaviour key).
        system: The system text ("" when none).
        turns: The other messages as (role, text), in order.
        stream: Whether the answer is streamed.
        include_usage: Whether an OpenAI stream asked for usage.
        max_tokens: The output token cap, if any.
        api_key: The key the caller presented, if any.
    """

    model: str
    system: str
    turns: tuple[tuple[str, str], ...]
    stream: bool
    include_usage: bool = False
    max_tokens: int | None = None
    api_key: str | None = None

    @property
    def last_user(self) -> str:
        """The last user message ("" when none)."""
        for role, text in reversed(self.turns):
            if role == "user":
                return text
        return ""

    @property
    def input_tokens(self) -> int:
        """Tokens of the whole prompt."""
        texts = [self.system, *(text for _, text in self.turns)]
        return count_tokens(" ".join(texts))


@dataclass(frozen=True, slots=True)
class Answer:
    """The fake model's answer to one call.

    Attributes:
        words: The answer's tokens.
        finish: ``stop``, ``length``, ``content_filter`` (the answer was
            cut by the filter) or ``blocked`` (the prompt was refused).
        input_tokens: Prompt tokens.
        number: The model's 1-based call number (used in response ids).
    """

    words: tuple[str, ...]
    finish: str
    input_tokens: int
    number: int

    @property
    def text(self) -> str:
        """The whole answer text."""
        return " ".join(self.words)

    @property
    def output_tokens(self) -> int:
        """Tokens of the answer, at least 1."""
        return max(1, len(self.words))

    def pieces(self) -> list[str]:
        """The stream pieces, one per token, joining to :attr:`text`."""
        last = len(self.words) - 1
        return [w if i == last else w + " " for i, w in enumerate(self.words)]


def compose_answer(
    behaviour: Behaviour, call: ChatCall, number: int, fault: Fault | None
) -> Answer:
    """The simulated answer to a call, live or in a provider batch.

    Args:
        behaviour: The model's behaviour (its answer text).
        call: The parsed request.
        number: The call's number (used in response ids).
        fault: A ``content_filter`` fault to apply, or None.

    Returns:
        The answer: cut by the filter (``content_filter``), refused
        (``blocked``, no words) or capped by ``max_tokens`` (``length``).
    """
    words = tuple(behaviour.answer(call.system, call.last_user).split())
    finish = "stop"
    if fault is not None and fault.kind == "content_filter":
        if fault.stage == "prompt":
            words, finish = (), "blocked"
        else:
            words, finish = words[: len(words) // 2], "content_filter"
    if call.max_tokens is not None and len(words) > call.max_tokens:
        words, finish = words[: call.max_tokens], "length"
    return Answer(words, finish, call.input_tokens, number)


def sse(data: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    """Frame one server-sent event.

    Args:
        data: A JSON object, or a raw string such as ``[DONE]``.
        event: The event name, if the vendor uses them.

    Returns:
        The frame, ending with the blank line.
    """
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def text_of(content: Any) -> str:
    """Join the text of a message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, Mapping) else str(part)
            for part in content
        )
    return ""


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Wire(Protocol):
    """A vendor wire format."""

    auth_status: int

    def parse(self, request: web.Request, body: Any) -> ChatCall:
        """Read the vendor's request body (raise :class:`WireError`)."""
        ...

    def completion(self, call: ChatCall, answer: Answer) -> dict[str, Any]:
        """Render a whole answer."""
        ...

    def stream_head(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """Frames before the first token."""
        ...

    def stream_piece(
        self, call: ChatCall, answer: Answer, piece: str
    ) -> bytes:
        """The frame of one token."""
        ...

    def stream_tail(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """Frames after the last token, up to but excluding the end marker."""
        ...

    def stream_end(self, call: ChatCall, answer: Answer) -> list[bytes]:
        """The end-marker frames (what ``no_end_marker`` leaves out)."""
        ...

    def stream_error(self, status: int, message: str) -> bytes:
        """An error event inside a 200 stream."""
        ...

    def error(
        self, kind: str, status: int, message: str, fault: Fault | None
    ) -> dict[str, Any]:
        """The vendor's JSON error body for a failure kind."""
        ...

    def blocked_prompt(self) -> tuple[int, dict[str, Any]] | None:
        """The vendor's error for a refused prompt.

        None when the vendor answers normally instead (finish ``blocked``).
        """
        ...
