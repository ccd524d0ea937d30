"""What scorers share: quoting outputs in feedback, reading JSON answers."""

from __future__ import annotations

import json
import re
from typing import Any

from optimizer.protocols import Score
from optimizer.records import Example

# Feedback quotes outputs; long ones are cut so the meta model's prompt
# stays small.
FEEDBACK_CHARS = 200


def quote(text: str, limit: int = FEEDBACK_CHARS) -> str:
    """``text`` quoted for feedback, cut to ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return repr(text)


def no_expected(example: Example) -> Score:
    """The verdict on an example a comparing scorer cannot use."""
    return Score(None, error=f"example {example.id} has no expected output")


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (a bool is not a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.I | re.S)


def parse_json(text: str) -> Any:
    """The JSON document in ``text``, bare or in a code fence.

    Raises:
        ValueError: No JSON document could be read.
    """
    try:
        return json.loads(text)
    except ValueError:
        pass
    for fenced in _FENCE.findall(text):
        try:
            return json.loads(fenced)
        except ValueError:
            continue
    raise ValueError("not JSON")


def as_text(value: Any) -> str:
    """A JSON value as text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
