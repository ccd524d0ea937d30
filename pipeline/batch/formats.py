"""Input lines: an OpenAI Batch request or a job item, read as one shape.

Two forms are accepted, line by line (a file may mix them):

* the OpenAI Batch input format::

    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4", "messages": [...], "temperature": 0}}

  ``messages`` are system (or developer) messages, then one user
  message: a job item has one system prompt and one user content, so a
  multi-turn conversation is a bad line, not silently cut;
* a job item as ``POST /jobs`` takes it: ``{customId?, model,
  systemPrompt?, userContent, temperature?, maxTokens?}`` or
  ``{customId?, model, promptId, promptVersion?, variables}``.

Both become an :class:`~pipeline.jobs.validation.ItemSpec`. A line
without a custom id gets ``line-<number>``, so every output line can be
matched with its input line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from pipeline.jobs.item_input import (
    MAX_CUSTOM_ID_CHARS,
    MAX_ITEM_TEXT_CHARS,
    JobItemIn,
)
from pipeline.jobs.validation import ItemSpec

#: Problems named per bad line; the rest are counted.
MAX_PROBLEMS_PER_LINE = 3
#: Keys that mark a line as an OpenAI Batch request.
_OPENAI_KEYS = frozenset({"custom_id", "method", "url", "body"})
_SYSTEM_ROLES = frozenset({"system", "developer"})


class LineError(ValueError):
    """A line that cannot be an item; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _JobItem(JobItemIn):
    """A job item line; its ``customId``, when given, is not empty."""

    custom_id: str | None = Field(
        None, min_length=1, max_length=MAX_CUSTOM_ID_CHARS
    )


class _Message(_Strict):
    role: str
    # Checked by hand: a union's error names each member, which reads
    # worse than one sentence.
    content: Any

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: Any) -> Any:
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise ValueError("give text, or a list of text parts")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise ValueError(
                    f"only text parts can be batched, not {kind!r}"
                )
        return content

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part["text"] for part in self.content)


class _ChatBody(_Strict):
    model: str = Field(min_length=1, max_length=100)
    messages: list[_Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)


class _BatchRequest(_Strict):
    custom_id: str = Field(min_length=1, max_length=MAX_CUSTOM_ID_CHARS)
    method: Literal["POST"]
    url: Literal["/v1/chat/completions"]
    body: _ChatBody


def parse_line(raw: bytes | str, number: int) -> ItemSpec:
    """Read one input line.

    Args:
        raw: The line (without its newline, or with it).
        number: Its 1-based line number (the default custom id).

    Returns:
        The item.

    Raises:
        LineError: The line is not a valid item (says why).
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise LineError(
            f"not JSON: {error.msg} (column {error.colno})"
        ) from None
    if not isinstance(data, dict):
        raise LineError("expected a JSON object")
    try:
        if _OPENAI_KEYS & data.keys():
            spec = _from_openai(_BatchRequest.model_validate(data))
        else:
            spec = _JobItem.model_validate(data).spec()
    except ValidationError as error:
        raise LineError(_describe(error)) from None
    if spec.custom_id is None:
        spec = replace(spec, custom_id=f"line-{number}")
    return spec


def _from_openai(request: _BatchRequest) -> ItemSpec:
    body = request.body
    *leading, last = body.messages
    for index, message in enumerate(leading):
        if message.role not in _SYSTEM_ROLES:
            raise LineError(
                f"body.messages[{index}]: role {message.role!r} is not "
                "supported: give system messages, then one user message "
                "(multi-turn conversations cannot be batched)"
            )
    if last.role != "user":
        raise LineError(
            f"body.messages[{len(leading)}]: the last message must be the "
            f"user's, not {last.role!r}"
        )
    system = "\n\n".join(message.text() for message in leading) or None
    user = last.text()
    for name, text in (("system", system), ("user", user)):
        if text is not None and len(text) > MAX_ITEM_TEXT_CHARS:
            raise LineError(
                f"body.messages: the {name} text is over "
                f"{MAX_ITEM_TEXT_CHARS} characters"
            )
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise LineError(
            "body: give max_tokens or max_completion_tokens, not both"
        )
    return ItemSpec(
        model=body.model,
        custom_id=request.custom_id,
        system_prompt=system,
        user_content=user,
        temperature=body.temperature,
        max_tokens=body.max_tokens or body.max_completion_tokens,
    )


def _describe(error: ValidationError) -> str:
    """The first few problems of a line, each naming its field."""
    problems = error.errors(include_url=False, include_input=False)
    parts = [_problem(problem) for problem in problems]
    shown = "; ".join(parts[:MAX_PROBLEMS_PER_LINE])
    more = len(parts) - MAX_PROBLEMS_PER_LINE
    return shown + (f" (and {more} more)" if more > 0 else "")


def _problem(problem: Any) -> str:
    location = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part)
        for part in problem["loc"]
    ).replace(".[", "[")
    if problem["type"] == "extra_forbidden":
        message = "unknown or unsupported field"
    elif problem["type"] == "missing":
        message = "required"
    else:
        message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def to_api_item(spec: ItemSpec) -> dict[str, Any]:
    """An item as ``POST /jobs`` takes it (camelCase, no empty fields)."""
    fields = {
        "customId": spec.custom_id,
        "model": spec.model,
        "promptId": spec.prompt_id,
        "promptVersion": spec.prompt_version,
        "variables": spec.variables,
        "systemPrompt": spec.system_prompt,
        "userContent": spec.user_content,
        "temperature": spec.temperature,
        "maxTokens": spec.max_tokens,
    }
    return {key: value for key, value in fields.items() if value is not None}
