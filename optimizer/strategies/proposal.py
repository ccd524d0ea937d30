"""Reflective proposal: the meta model reads failures and writes prompts.

GEPA's reflective mutation with a fixed text contract: the meta prompt
holds the parents as ``<prompt id=".." score="..">`` blocks (the first
is the one to improve), the parent's failures as ``<failure>`` blocks
and the number wanted as ``<count>N</count>``; the reply is JSON,
``{"candidates": [{"prompt": "...", "rationale": "..."}]}``. A reply
that cannot be used is data (counted as discarded proposals), never an
exception: the meta model's mistakes must not end a run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from optimizer.protocols import ModelCall
from optimizer.records import Answer, Candidate
from providers.base import CompletionRequest

INSTRUCTIONS = """\
You improve the system prompt of a language model.

Below is the current prompt (the first one), then other strong prompts
for comparison, each with its validation score (0 to 1, higher is
better). After them come examples the current prompt got wrong: the
input, the expected answer, what the model answered, and the scorer's
feedback.

Work out why the model failed, then write improved versions of the
current prompt. Each must:
- give general instructions that help on new inputs of the same kind,
  not answers or hints for the particular examples shown;
- keep what already works in the current prompt;
- differ from every prompt shown and from each other.
"""

REPLY_FORMAT = """\
Reply with JSON only, no other text, in exactly this form:
{"candidates": [{"prompt": "the full new prompt", "rationale": "why it \
should do better, in one sentence"}]}
"""

#: The tags of the meta prompt, whose closing tags inside quoted text
#: are neutralized so that text cannot end its block early.
_TAGS = (
    "prompt",
    "failure",
    "input",
    "expected",
    "got",
    "feedback",
    "count",
    "tried",
)
_CLOSING_TAG = re.compile(rf"</({'|'.join(_TAGS)})\b", re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Failure:
    """An example the parent got wrong, as shown to the meta model.

    Attributes:
        input: The user message the target model saw.
        expected: The expected output, if the scorer compares to one.
        got: The target model's answer.
        feedback: The scorer's explanation.
    """

    input: str
    expected: str | None
    got: str | None
    feedback: str | None


@dataclass(frozen=True, slots=True)
class ParentView:
    """A parent prompt as the meta model sees it.

    Attributes:
        candidate: The candidate.
        score: Its validation score.
        failures: Examples it got wrong (may be empty).
    """

    candidate: Candidate
    score: float | None
    failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Proposal:
    """One new prompt the meta model wrote."""

    prompt: str
    rationale: str | None


@dataclass(frozen=True, slots=True)
class ProposalBatch:
    """The usable proposals of one meta call, and what it cost.

    Attributes:
        proposals: Distinct new prompts, at most the number asked for.
        discarded: Proposals asked for or received but unusable.
        answer: The meta model's answer (its spending), if it was asked.
    """

    proposals: list[Proposal]
    discarded: int
    answer: Answer | None


class Proposer(Protocol):
    """Writes new candidate prompts from parents and their failures."""

    async def propose(
        self,
        parents: Sequence[ParentView],
        count: int,
        *,
        tried: Sequence[str] = (),
    ) -> ProposalBatch:
        """Up to ``count`` new prompts improving ``parents[0]``.

        ``tried`` are prompts already derived from ``parents[0]`` that
        did no better (not to be proposed again).
        """
        ...


def neutralize(text: str) -> str:
    r"""Text whose closing tags cannot end a meta prompt block.

    Args:
        text: Quoted text (a prompt, an input, an answer).

    Returns:
        The text with ``</prompt`` and the like spelled ``<\/prompt``.
    """
    return _CLOSING_TAG.sub(r"<\\/\1", text)


def _prompt_block(parent: ParentView) -> str:
    score = "" if parent.score is None else f' score="{parent.score:.2f}"'
    text = neutralize(parent.candidate.prompt)
    return f'<prompt id="{parent.candidate.id}"{score}>\n{text}\n</prompt>'


def _failure_block(failure: Failure) -> str:
    fields = {
        "input": failure.input,
        "expected": failure.expected,
        "got": failure.got,
        "feedback": failure.feedback,
    }
    lines = [
        f"<{tag}>{neutralize(value)}</{tag}>"
        for tag, value in fields.items()
        if value is not None
    ]
    return "<failure>\n" + "\n".join(lines) + "\n</failure>"


def meta_prompt(
    parents: Sequence[ParentView], count: int, tried: Sequence[str] = ()
) -> str:
    """The meta model's prompt.

    Args:
        parents: The parent to improve first, then others for contrast.
        count: How many new prompts to ask for.
        tried: Prompts derived from the current one that did no better.

    Returns:
        The prompt text, in the fixed block format.

    Raises:
        ValueError: No parents.
    """
    if not parents:
        raise ValueError("a proposal needs a parent")
    prompts = "\n\n".join(_prompt_block(p) for p in parents)
    failures = "\n\n".join(_failure_block(f) for f in parents[0].failures)
    parts = [INSTRUCTIONS, "Prompts:", prompts]
    if failures:
        parts += ["Failures of the current prompt:", failures]
    else:
        parts.append("No failures of the current prompt were recorded.")
    if tried:
        parts += [
            "Already tried from the current prompt, and no better (do not "
            "propose these again):",
            "\n\n".join(f"<tried>\n{neutralize(t)}\n</tried>" for t in tried),
        ]
    parts += [
        f"Number of new prompts to write: <count>{count}</count>",
        REPLY_FORMAT,
    ]
    return "\n\n".join(parts)


def _json_values(text: str) -> list[Any]:
    """JSON values in ``text``: all of it, fenced blocks, or embedded."""
    decoder = json.JSONDecoder()
    sources = [text, *_FENCE.findall(text)]
    for source in sources:
        try:
            return [json.loads(source)]
        except ValueError:
            continue
    found = []
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        found.append(value)
    return found


def _entries(text: str) -> list[Any] | None:
    """The candidate entries of a reply, or None when it has none."""
    for value in _json_values(text):
        if isinstance(value, dict) and isinstance(
            value.get("candidates"), list
        ):
            return list(value["candidates"])
        if isinstance(value, list):
            return value
    return None


def parse_reply(
    text: str | None, parents: Sequence[str], count: int
) -> tuple[list[Proposal], int]:
    """The usable proposals of a meta model's reply.

    Args:
        text: The reply (None when the call failed).
        parents: The parent prompts (a copy of one is no proposal).
        count: How many were asked for.

    Returns:
        ``(proposals, discarded)``: at most ``count`` distinct new
        prompts; discarded counts malformed, duplicate and surplus
        entries, and entries asked for but missing.
    """
    entries = None if text is None else _entries(text)
    if entries is None:
        return [], count
    seen = {p.strip() for p in parents}
    proposals: list[Proposal] = []
    for entry in entries:
        if len(proposals) == count or not isinstance(entry, dict):
            continue
        prompt = entry.get("prompt")
        if not isinstance(prompt, str) or prompt.strip() in seen:
            continue
        if not prompt.strip():
            continue
        rationale = entry.get("rationale")
        proposals.append(
            Proposal(
                prompt.strip(),
                rationale if isinstance(rationale, str) else None,
            )
        )
        seen.add(prompt.strip())
    discarded = len(entries) - len(proposals) + max(0, count - len(entries))
    return proposals, discarded


class MetaProposer:
    """Asks the meta model for new prompts in one call.

    Args:
        call: The run's model calls.
        meta_model: The catalog model that writes prompts.
        temperature: Its sampling temperature (some creativity helps).
    """

    def __init__(
        self,
        call: ModelCall,
        meta_model: str,
        *,
        temperature: float | None = 1.0,
    ) -> None:
        self._call = call
        self.meta_model = meta_model
        self.temperature = temperature

    async def propose(
        self,
        parents: Sequence[ParentView],
        count: int,
        *,
        tried: Sequence[str] = (),
    ) -> ProposalBatch:
        """Ask for ``count`` improvements of ``parents[0]``.

        Args:
            parents: The parent to improve first, then others to show.
            count: How many new prompts to ask for.
            tried: Prompts derived from the parent that did no better.

        Returns:
            The usable proposals; a failed call or an unreadable reply
            gives none, with ``count`` discarded.

        Raises:
            ValueError: No parents.
        """
        request = CompletionRequest.from_prompts(
            None,
            meta_prompt(parents, count, tried),
            temperature=self.temperature,
        )
        answer = await self._call(self.meta_model, request)
        proposals, discarded = parse_reply(
            None if answer.failed else answer.text,
            [p.candidate.prompt for p in parents],
            count,
        )
        return ProposalBatch(proposals, discarded, answer)
