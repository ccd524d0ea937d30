"""Output lines in the OpenAI Batch format, appended exactly once."""

import json
from datetime import UTC, datetime

import pytest

from pipeline.batch.backend import ResultItem
from pipeline.batch.errors import StateMismatch
from pipeline.batch.output import OutputFile, encode_line, output_line


def test_a_processed_item_is_a_chat_completion():
    item = ResultItem.from_doc(
        {
            "id": "abc",
            "customId": "q1",
            "model": "m",
            "status": "PROCESSED",
            "result": {
                "text": "4",
                "finishReason": "stop",
                "inputTokens": 10,
                "outputTokens": 1,
                "cost": 0.01,
            },
            "error": None,
            "finishedAt": "2024-05-01T12:00:00Z",
        }
    )
    line = output_line(item)
    assert line["id"] == "batch_req_abc"
    assert line["custom_id"] == "q1"
    assert line["error"] is None
    response = line["response"]
    assert response["status_code"] == 200
    assert response["request_id"] == "abc"
    body = response["body"]
    assert body["object"] == "chat.completion"
    assert body["model"] == "m"
    assert body["created"] == int(
        datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    )
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "4"},
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "total_tokens": 11,
    }


def test_failed_and_canceled_items_are_errors():
    failed = ResultItem.from_doc(
        {
            "_id": "x",
            "customId": "q2",
            "model": "m",
            "status": "FAILED",
            "error": {"type": "permanent", "message": "bad request"},
        }
    )
    assert output_line(failed) == {
        "id": "batch_req_x",
        "custom_id": "q2",
        "response": None,
        "error": {"code": "permanent", "message": "bad request"},
    }
    canceled = ResultItem("y", "q3", "m", "CANCELED")
    assert output_line(canceled)["error"]["code"] == "canceled"


def test_output_file_drops_what_was_not_committed(tmp_path):
    path = tmp_path / "out.jsonl"
    output = OutputFile(path)
    output.open(0)
    committed = output.append([encode_line({"a": 1}), encode_line({"b": 2})])
    output.close()
    with path.open("ab") as file:
        file.write(b'{"c": 3}\n{"d": ')  # a crash mid-page
    output.open(committed)
    assert output.append([encode_line({"e": 5})]) == path.stat().st_size
    output.close()
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"a": 1},
        {"b": 2},
        {"e": 5},
    ]


def test_a_shortened_output_is_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("{}\n")
    with pytest.raises(StateMismatch, match="was changed"):
        OutputFile(path).open(100)
