"""The LLM judge: a catalog model grades the output against a rubric.

Its request is fixed for a given example and output (temperature 0), so
a resumed run finds the judge's stored answer instead of asking again;
a failed or unparseable judge answer leaves the example unscored.
"""

from __future__ import annotations

import re
from typing import Any

from optimizer.protocols import ModelCall, Score
from optimizer.records import Example
from optimizer.scoring._common import (
    FEEDBACK_CHARS,
    as_text,
    parse_json,
    quote,
)
from providers.base import ChatMessage, CompletionRequest

JUDGE_SYSTEM_PROMPT = (
    "You grade one answer written by an AI model. Apply the rubric "
    "strictly. Reply with one or two sentences of justification, then a "
    "last line of the form 'SCORE: x' where x is a number from 0 "
    "(completely wrong) to 1 (fully right)."
)
_DEFAULT_RUBRIC = (
    "The output answers the input correctly and completely, and agrees "
    "with the expected output when one is given."
)
_SCORE_LINE = re.compile(
    r"\bscore\s*[:=]\s*\**\s*([-+]?\d*\.?\d+)(?:\s*/\s*(\d+(?:\.\d+)?))?",
    re.I,
)
_SCORE_FIELD = re.compile(r'"score"\s*:\s*"?([-+]?\d*\.?\d+)', re.I)
_BARE = re.compile(r"\s*([-+]?\d*\.?\d+)(?:\s*/\s*(\d+(?:\.\d+)?))?\s*\.?\s*")


def _fraction(value: str, out_of: str | None) -> float | None:
    """A judge's number as a fraction in [0, 1], or None if off scale."""
    number = float(value)
    if out_of is not None:
        scale = float(out_of)
        number = number / scale if scale > 0 else -1.0
    elif 1 < number <= 10:
        number /= 10  # the judge graded out of 10
    return number if 0 <= number <= 1 else None


def parse_judge_score(text: str) -> tuple[float, str] | None:
    """Read a judge's answer: its score in [0, 1] and its justification.

    Accepts a ``SCORE: 0.8`` line (the last one wins), a JSON object with
    a ``score``, or a bare number; scores out of 10 (``8``, ``8/10``)
    are scaled to [0, 1].

    Args:
        text: The judge's answer.

    Returns:
        ``(score, justification)``, or None when no score can be read.
    """
    lines = _SCORE_LINE.findall(text)
    if lines:
        value, out_of = lines[-1]
        reason = _SCORE_LINE.sub("", text)
    elif field := _SCORE_FIELD.search(text):
        value, out_of = field.group(1), None
        reason = ""
        try:
            doc = parse_json(text.strip())
            if isinstance(doc, dict):
                reason = str(doc.get("reason") or doc.get("reasoning") or "")
        except ValueError:
            pass
    elif bare := _BARE.fullmatch(text):
        value, out_of = bare.group(1), bare.group(2)
        reason = ""
    else:
        return None
    fraction = _fraction(value, out_of or None)
    if fraction is None:
        return None
    return fraction, " ".join(reason.split())


def _show_inputs(inputs: dict[str, Any]) -> str:
    if list(inputs) == ["input"]:
        return as_text(inputs["input"])
    return "\n".join(f"{name}: {as_text(v)}" for name, v in inputs.items())


class JudgeScorer:
    """A judge model grades the output with a rubric.

    A failed judge call leaves the example unscored: the judge's outage
    says nothing of the candidate.
    """

    name = "llm_judge"
    model_calls = 1

    def __init__(self, judge_model: str, rubric: str | None = None) -> None:
        self.judge_model = judge_model
        self.rubric = rubric

    def request(self, example: Example, output: str) -> CompletionRequest:
        """The grading request for one output.

        Args:
            example: The example (its rubric wins over the configured).
            output: The target model's answer.

        Returns:
            A deterministic request, so a resumed run finds the stored
            judge answer instead of asking again.
        """
        rubric = example.rubric or self.rubric or _DEFAULT_RUBRIC
        parts = [
            f"## Rubric\n{rubric}",
            f"## Input\n{_show_inputs(example.inputs)}",
        ]
        if example.expected is not None:
            parts.append(f"## Expected output\n{example.expected}")
        parts.append(f"## Output to grade\n{output}")
        parts.append("Grade the output. End with 'SCORE: x' (0 to 1).")
        return CompletionRequest(
            messages=(
                ChatMessage("system", JUDGE_SYSTEM_PROMPT),
                ChatMessage("user", "\n\n".join(parts)),
            ),
            temperature=0.0,
        )

    async def score(
        self, example: Example, output: str, call: ModelCall
    ) -> Score:
        """Ask the judge; its answer is returned in ``Score.judge``."""
        answer = await call(self.judge_model, self.request(example, output))
        if answer.failed or answer.text is None:
            return Score(
                None,
                error=f"judge call failed: {answer.error or 'no answer'}",
                judge=answer,
            )
        parsed = parse_judge_score(answer.text)
        if parsed is None:
            return Score(
                None,
                error="judge answer unparseable: " + quote(answer.text),
                judge=answer,
            )
        value, reason = parsed
        feedback = reason[:FEEDBACK_CHARS] or f"judge scored {value:.2f}"
        return Score(value, feedback=feedback, judge=answer)
