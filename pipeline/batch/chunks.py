"""Chunks: consecutive input lines submitted together as one job.

A chunk is a byte range of the input, so reading it again needs no
index of lines. Its idempotency key is the input's content hash and
the chunk's position: submitting the same chunk again (after a crash,
or from another run of the same file) finds the job it made instead of
making and paying for a second one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple


@dataclass
class Chunk:
    """One job's share of the input, and how far its results are written.

    Attributes:
        index: Position among the chunks (0-based).
        first_line: Line number of its first line (1-based).
        items: Items it holds (blank lines are not items).
        start: Byte offset of its first line.
        end: Byte offset just past its last line.
        key: The job's idempotency key.
        job_id: The job, once submitted.
        written: Its items whose results are in the output, counted
            from its first item (the results cursor).
        settled: Its job was marked consumed once every result was
            written (or needs nothing more: failed, canceled).
    """

    index: int
    first_line: int
    items: int
    start: int
    end: int
    key: str
    job_id: str | None = None
    written: int = 0
    settled: bool = False

    @property
    def done(self) -> bool:
        """Whether every result of the chunk is written."""
        return self.written >= self.items

    def to_doc(self) -> dict[str, Any]:
        """The chunk as stored in the state file."""
        return {
            "index": self.index,
            "firstLine": self.first_line,
            "items": self.items,
            "start": self.start,
            "end": self.end,
            "key": self.key,
            "jobId": self.job_id,
            "written": self.written,
            "settled": self.settled,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Chunk:
        """Read a chunk from the state file."""
        return cls(
            index=doc["index"],
            first_line=doc["firstLine"],
            items=doc["items"],
            start=doc["start"],
            end=doc["end"],
            key=doc["key"],
            job_id=doc["jobId"],
            written=doc["written"],
            settled=doc["settled"],
        )


def chunk_key(input_sha256: str, index: int) -> str:
    """The idempotency key of a chunk of the input with this hash."""
    return f"batch-{input_sha256[:40]}-{index}"


@dataclass
class _Open:
    first_line: int
    start: int
    items: int = 0
    size: int = 0
    end: int = 0


class ChunkPlanner:
    """Cuts the input into chunks while it is read, line by line.

    A chunk closes before it would pass ``max_items`` items or
    ``max_bytes`` bytes of lines (a request-size bound; a single longer
    line still makes a chunk of its own).
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("chunks need room for at least one item")
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._closed: list[_Open] = []
        self._open: _Open | None = None

    def add(self, number: int, start: int, end: int) -> None:
        """Count one item: line ``number`` at bytes ``[start, end)``."""
        size = end - start
        current = self._open
        if current is not None and (
            current.items >= self._max_items
            or current.size + size > self._max_bytes
        ):
            self._closed.append(current)
            current = None
        if current is None:
            current = self._open = _Open(first_line=number, start=start)
        current.items += 1
        current.size += size
        current.end = end

    def finish(self, input_sha256: str) -> list[Chunk]:
        """The chunks, keyed by the input's content hash."""
        parts = [*self._closed, *([self._open] if self._open else [])]
        return [
            Chunk(
                index=index,
                first_line=part.first_line,
                items=part.items,
                start=part.start,
                end=part.end,
                key=chunk_key(input_sha256, index),
            )
            for index, part in enumerate(parts)
        ]


class Line(NamedTuple):
    """One non-blank input line."""

    number: int
    start: int
    end: int
    text: bytes


def read_lines(
    path: Path, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[Line]:
    """The non-blank lines of a byte range of a file.

    Args:
        path: The file.
        start: Byte offset of a line's start.
        end: Stop before this offset (the file's end by default).
        first_line: The number of the line at ``start``.

    Yields:
        Each line with its number and byte range (the newline included
        in the range, stripped from the text).
    """
    with path.open("rb") as file:
        file.seek(start)
        offset, number = start, first_line
        for raw in file:
            if end is not None and offset >= end:
                return
            following = offset + len(raw)
            if raw.strip():
                yield Line(number, offset, following, raw.rstrip(b"\r\n"))
            offset, number = following, number + 1
