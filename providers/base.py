"""The provider interface: one small async contract every adapter meets.

A provider turns a :class:`CompletionRequest` into a :class:`Completion`
(or a stream of :class:`TextDelta` ending with the :class:`Completion`)
for one model described by a config mapping, using the vendor's official
SDK. Providers know nothing of MongoDB or Ray.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What to ask the model.

    Attributes:
        messages: The conversation; system messages may come first.
        temperature: Sampling temperature, or None for the model default.
        max_tokens: Cap on output tokens, or None for the model default.
    """

    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    max_tokens: int | None = None

    @classmethod
    def from_prompts(
        cls,
        system_prompt: str | None,
        user_content: str,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> CompletionRequest:
        """Build the common single-turn request of a batch item.

        Args:
            system_prompt: Optional system instructions.
            user_content: The user's message.
            temperature: Sampling temperature.
            max_tokens: Output token cap.

        Returns:
            The request.
        """
        messages: list[ChatMessage] = []
        if system_prompt:
            messages.append(ChatMessage("system", system_prompt))
        messages.append(ChatMessage("user", user_content))
        return cls(tuple(messages), temperature, max_tokens)

    @property
    def system_prompt(self) -> str | None:
        """All system messages joined, for APIs that take them apart."""
        parts = [m.content for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None

    @property
    def conversation(self) -> tuple[ChatMessage, ...]:
        """The non-system messages, in order."""
        return tuple(m for m in self.messages if m.role != "system")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one call."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """The outcome of one successful call.

    Attributes:
        text: The answer.
        finish_reason: Normalised: ``stop``, ``length``,
            ``content_filter`` or the vendor's own value otherwise.
        usage: Tokens used.
        model: The model the provider says answered.
        latency_ms: Wall time from request to the last byte.
        response_id: The provider's id for the response, if any.
    """

    text: str
    finish_reason: str | None
    usage: Usage
    model: str | None
    latency_ms: float
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of streamed answer text."""

    text: str


StreamEvent = TextDelta | Completion


class LLMProvider(ABC):
    """Base class of every provider adapter.

    Subclasses set ``name`` (the registry name) and implement
    :meth:`validate_config` and :meth:`complete`; streaming is optional.
    An instance may cache SDK clients per config and key; :meth:`aclose`
    releases them.
    """

    name: ClassVar[str]

    def get_name(self) -> str:
        """Return the provider's registry name."""
        return self.name

    @abstractmethod
    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a model's provider config.

        Args:
            config: The model's ``config`` mapping (camelCase keys).

        Raises:
            ConfigError: Naming the first offending field.
        """

    @abstractmethod
    async def complete(
        self,
        config: Mapping[str, Any],
        request: CompletionRequest,
        api_key: str | None,
    ) -> Completion:
        """Run one call and return the whole answer.

        Args:
            config: The model's provider config.
            request: What to ask.
            api_key: The model's key, or None where none is needed.

        Returns:
            The completion, usage included.

        Raises:
            ProviderError: A subclass saying what went wrong.
        """

    def stream(
        self,
        config: Mapping[str, Any],
        request: CompletionRequest,
        api_key: str | None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream one call: text deltas, then the final completion.

        Args:
            config: The model's provider config.
            request: What to ask.
            api_key: The model's key, or None where none is needed.

        Returns:
            An async iterator of :class:`TextDelta` ending with exactly
            one :class:`Completion` (usage included).

        Raises:
            NotImplementedError: The provider cannot stream.
        """
        raise NotImplementedError(f"{self.name} does not stream")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, no-op
        """Close cached SDK clients."""
