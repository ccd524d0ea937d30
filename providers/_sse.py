"""Server-sent events: decoding a byte stream into events.

A minimal decoder for the ``text/event-stream`` format (fields ``event``
and ``data``; comments and ``id``/``retry`` are ignored). The OpenAI-wire
adapters read their streams through it instead of through the SDKs'
iterators, because those treat a clean end of the body as the end of the
answer and so cannot tell a complete stream from one that lost its
``[DONE]`` marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event.

    Attributes:
        event: The ``event:`` field, or None for the default type.
        data: The ``data:`` lines joined by newlines.
    """

    event: str | None
    data: str


class _Decoder:
    """Accumulates fields line by line until a blank line ends an event."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []

    def line(self, line: str) -> SSEEvent | None:
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> SSEEvent | None:
        if not self._data and self._event is None:
            return None
        event = SSEEvent(self._event, "\n".join(self._data))
        self._event, self._data = None, []
        return event


async def iter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Decode a byte stream into server-sent events.

    Args:
        chunks: The response body, in chunks of any size.

    Yields:
        Each event as soon as its terminating blank line arrives; a last
        event cut before its blank line is still yielded at the end.
    """
    decoder = _Decoder()
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            event = decoder.line(raw.removesuffix(b"\r").decode("utf-8"))
            if event is not None:
                yield event
    if buffer:
        event = decoder.line(buffer.removesuffix(b"\r").decode("utf-8"))
        if event is not None:
            yield event
    event = decoder.flush()
    if event is not None:
        yield event
