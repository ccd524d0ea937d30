"""Bodies of the OpenAI-compatible ``/v1/chat/completions``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from providers.base import ChatMessage, CompletionRequest, Role

#: OpenAI's roles as the providers know them ("developer" is the newer
#: name of "system").
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


class TextPart(BaseModel):
    """A text content part (the only kind accepted)."""

    type: Literal["text"]
    text: str


class MessageIn(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        """The content as plain text."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    """``stream_options``."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """The request; unknown OpenAI parameters are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)

    @model_validator(mode="after")
    def _has_user_turn(self) -> ChatCompletionIn:
        if not any(m.role in ("user", "assistant") for m in self.messages):
            raise ValueError("messages need at least one user message")
        return self

    @property
    def max_output_tokens(self) -> int | None:
        """The output limit asked (``max_completion_tokens`` wins)."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def max_tokens_field(self) -> str:
        """The field that gave :attr:`max_output_tokens`."""
        return (
            "max_completion_tokens"
            if self.max_completion_tokens
            else "max_tokens"
        )

    def request(self) -> CompletionRequest:
        """The provider-neutral request."""
        messages = tuple(
            ChatMessage(_ROLES[m.role], m.text()) for m in self.messages
        )
        return CompletionRequest(
            messages,
            temperature=self.temperature,
            max_tokens=self.max_output_tokens,
        )


def usage_body(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
