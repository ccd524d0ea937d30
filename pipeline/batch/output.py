"""The results file: OpenAI Batch output lines, each written exactly once.

A processed item becomes::

    {"id": "batch_req_<item id>", "custom_id": "q1",
     "response": {"status_code": 200, "request_id": "<item id>",
                  "body": {<a chat.completion, usage included>}},
     "error": null}

a failed or canceled one ``{"id", "custom_id", "response": null,
"error": {"code", "message"}}``.

The file is only appended to, a page of lines at a time, and made
durable (fsync) before the state file records its new length. So after
a crash the file may hold more than the state says (a page, or half a
line) but never less: :meth:`OutputFile.open` cuts it back to the
recorded length and those lines are written again, once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.batch.backend import ResultItem
from pipeline.batch.errors import StateMismatch
from pipeline.states import Status


def output_line(item: ResultItem) -> dict[str, Any]:
    """An item's result in the OpenAI Batch output format."""
    line: dict[str, Any] = {
        "id": f"batch_req_{item.id}",
        "custom_id": item.custom_id,
        "response": None,
        "error": None,
    }
    if item.status == Status.PROCESSED:
        line["response"] = {
            "status_code": 200,
            "request_id": item.id,
            "body": _completion(item),
        }
    elif item.status == Status.CANCELED:
        line["error"] = {
            "code": "canceled",
            "message": "the batch was canceled before this request ran",
        }
    else:
        line["error"] = {
            "code": item.error_type or "failed",
            "message": item.error_message or "the request failed",
        }
    return line


def _completion(item: ResultItem) -> dict[str, Any]:
    created = int(item.finished_at.timestamp()) if item.finished_at else 0
    return {
        "id": f"chatcmpl-{item.id}",
        "object": "chat.completion",
        "created": created,
        "model": item.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": item.text},
                "finish_reason": item.finish_reason or "stop",
            }
        ],
        "usage": {
            "prompt_tokens": item.input_tokens,
            "completion_tokens": item.output_tokens,
            "total_tokens": item.input_tokens + item.output_tokens,
        },
    }


def encode_line(line: dict[str, Any]) -> bytes:
    """One JSON line, newline included."""
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


class OutputFile:
    """The output, appended to durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._size = 0

    def open(self, committed: int) -> None:
        """Open for appending after the ``committed`` bytes.

        Args:
            committed: The length the state file recorded.

        Raises:
            StateMismatch: The file is shorter than recorded (it was
                changed by someone else).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("ab")
        size = os.fstat(file.fileno()).st_size
        if size < committed:
            file.close()
            raise StateMismatch(
                f"{self.path} holds {size} bytes, fewer than the "
                f"{committed} this batch wrote: it was changed; write the "
                "results to a new --output"
            )
        if size > committed:
            # Lines written after the last commit (a crash between the
            # write and the commit, or half a line): written again later.
            file.truncate(committed)
            os.fsync(file.fileno())
        self._file = file
        self._size = committed

    def append(self, lines: list[bytes]) -> int:
        """Write lines and make them durable.

        Returns:
            The file's new length (to commit in the state).
        """
        assert self._file is not None, "open() first"
        data = b"".join(lines)
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._size += len(data)
        return self._size

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
