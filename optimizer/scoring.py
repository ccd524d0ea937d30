"""Scorers: how right one output is, as a number in [0, 1] and a reason.

One small class per configured kind, all meeting
:class:`~optimizer.protocols.Scorer`; :func:`build_scorer` picks one
from a :class:`~optimizer.config.ScorerConfig`. A scorer never raises
for a bad output: a wrong answer is a low score with feedback (shown to
the meta model), and an output that cannot be judged at all (no
expected value, a failed judge call, a Python scorer that raised) is a
:class:`~optimizer.protocols.Score` with ``value`` None and ``error``
set, which the run leaves out of its means instead of counting as wrong.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from optimizer.config import ScorerConfig
from optimizer.protocols import ModelCall, Score, Scorer
from optimizer.records import Example
from providers.base import ChatMessage, CompletionRequest

# Feedback quotes outputs; long ones are cut so the meta model's prompt
# stays small.
FEEDBACK_CHARS = 200


def _quote(text: str, limit: int = FEEDBACK_CHARS) -> str:
    """``text`` quoted for feedback, cut to ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return repr(text)


def _no_expected(example: Example) -> Score:
    return Score(None, error=f"example {example.id} has no expected output")


class _Comparing:
    """Base of the scorers that compare the output to an expected one.

    A subclass sets ``name`` and implements :meth:`compare`; the base
    turns a missing expected value into an unscored example.
    """

    name: str = ""
    model_calls: int = 0

    async def score(
        self, example: Example, output: str, call: ModelCall
    ) -> Score:
        """Score ``output`` against the example's expected output."""
        if example.expected is None:
            return _no_expected(example)
        return self.compare(example, example.expected, output)

    def compare(self, example: Example, expected: str, output: str) -> Score:
        """Score ``output`` against ``expected``."""
        raise NotImplementedError


def _verdict(right: bool, expected: str, output: str, how: str) -> Score:
    if right:
        return Score(1.0, feedback=how)
    return Score(
        0.0, feedback=f"expected {_quote(expected)}, got {_quote(output)}"
    )


class ExactScorer(_Comparing):
    """The whole output, stripped, equals the expected output."""

    name = "exact"

    def __init__(self, case_sensitive: bool = True) -> None:
        self.case_sensitive = case_sensitive

    def compare(self, example: Example, expected: str, output: str) -> Score:
        """Score 1 when equal after stripping (and casefolding)."""
        want, got = expected.strip(), output.strip()
        if not self.case_sensitive:
            want, got = want.casefold(), got.casefold()
        return _verdict(want == got, expected, output, "exact match")


# Kept at the ends because they change the meaning ("50%", "#1").
_KEPT_AT_ENDS = frozenset("%#@&")


def _trimmable(char: str) -> bool:
    if char.isspace():
        return True
    if char in _KEPT_AT_ENDS:
        return False
    return unicodedata.category(char).startswith("P") or char in "`~"


def normalize(text: str) -> str:
    """``text`` as the normalized scorer compares it.

    NFKC, casefolded, whitespace collapsed, punctuation stripped at both
    ends (so a trailing period, quotes or Markdown bold do not count),
    except a minus sign before a number.

    Args:
        text: An output or an expected value.

    Returns:
        The normalized text.
    """
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(text)
    while start < end and _trimmable(text[start]):
        if text[start] == "-" and text[start + 1 : start + 2].isdigit():
            break
        start += 1
    while end > start and _trimmable(text[end - 1]):
        end -= 1
    return text[start:end]


class NormalizedScorer(_Comparing):
    """The output equals the expected one after :func:`normalize`."""

    name = "normalized"

    def compare(self, example: Example, expected: str, output: str) -> Score:
        """Score 1 when the normalized texts are equal."""
        right = normalize(expected) == normalize(output)
        return _verdict(right, expected, output, "normalized match")


class ContainsScorer(_Comparing):
    """The expected output appears somewhere in the output."""

    name = "contains"

    def __init__(self, case_sensitive: bool = True) -> None:
        self.case_sensitive = case_sensitive

    def compare(self, example: Example, expected: str, output: str) -> Score:
        """Score 1 when the stripped expected text is a substring."""
        want, got = expected.strip(), output
        if not self.case_sensitive:
            want, got = want.casefold(), got.casefold()
        if want in got:
            return Score(1.0, feedback="output contains the expected text")
        return Score(
            0.0,
            feedback=(
                f"expected the output to contain {_quote(expected.strip())}"
                f", got {_quote(output)}"
            ),
        )


class RegexScorer:
    """The pattern is found in the output.

    When the example has an expected value and the pattern a group, the
    first group's text must also equal the expected value (stripped).
    """

    name = "regex"
    model_calls = 0

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)

    async def score(
        self, example: Example, output: str, call: ModelCall
    ) -> Score:
        """Score 1 when the pattern matches (and captures the expected)."""
        shown = f"/{self.pattern.pattern}/"
        match = self.pattern.search(output)
        if match is None:
            return Score(
                0.0,
                feedback=f"output does not match {shown}: got "
                + _quote(output),
            )
        if example.expected is None or self.pattern.groups == 0:
            return Score(1.0, feedback=f"output matches {shown}")
        captured = match.group(1)
        if captured is not None and (
            captured.strip() == example.expected.strip()
        ):
            return Score(1.0, feedback=f"{shown} captured the expected text")
        return Score(
            0.0,
            feedback=(
                f"{shown} captured {_quote(captured or '')}, expected "
                f"{_quote(example.expected)}; output was {_quote(output)}"
            ),
        )


_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.I | re.S)
_MISSING: Any = object()


def _parse_json(text: str) -> Any:
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


def _lookup(doc: Any, path: str) -> Any:
    """The value at dotted ``path`` (list items by index), or _MISSING."""
    for part in path.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return _MISSING
    return doc


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(actual: Any, wanted: Any) -> bool:
    if _is_number(actual) and _is_number(wanted):
        return bool(float(actual) == float(wanted))
    if isinstance(actual, str) or isinstance(wanted, str):
        # The expected value may be plain text for a JSON number or bool.
        return _as_text(actual).strip() == _as_text(wanted).strip()
    return _as_text(actual) == _as_text(wanted)


class JsonFieldScorer(_Comparing):
    """A field of the output's JSON equals the expected value.

    The expected value is the same field of the expected output read as
    JSON, or the expected output itself (plain text or a JSON scalar).
    """

    name = "json_field"

    def __init__(self, field: str) -> None:
        self.field = field

    def _wanted(self, expected: str) -> Any:
        try:
            doc = json.loads(expected)
        except ValueError:
            return expected.strip()
        if isinstance(doc, dict | list):
            return _lookup(doc, self.field)
        return doc

    def compare(self, example: Example, expected: str, output: str) -> Score:
        """Score 1 when the field's values are equal."""
        wanted = self._wanted(expected)
        if wanted is _MISSING:
            return Score(
                None,
                error=f"expected output of example {example.id} has no "
                f"field {self.field!r}",
            )
        try:
            doc = _parse_json(output.strip())
        except ValueError:
            return Score(
                0.0,
                feedback=f"output is not valid JSON: got {_quote(output)}",
            )
        actual = _lookup(doc, self.field)
        if actual is _MISSING:
            return Score(
                0.0,
                feedback=f"output JSON has no field {self.field!r}: got "
                + _quote(output),
            )
        if _same(actual, wanted):
            return Score(1.0, feedback=f"field {self.field!r} matches")
        return Score(
            0.0,
            feedback=(
                f"field {self.field!r}: expected {_quote(_as_text(wanted))}"
                f", got {_quote(_as_text(actual))}"
            ),
        )


# A sign only where it cannot be a hyphen ("year-2020"); thousands
# separators only in complete groups of three ("1,234,567").
_NUMBER = re.compile(
    r"(?:(?<!\w)[-+])?"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?"
)


def first_number(text: str) -> float | None:
    """The first number written in ``text``, or None.

    Args:
        text: Free text, e.g. ``"It costs $1,234.50."``.

    Returns:
        The number (``1234.5``), or None if there is none.
    """
    match = _NUMBER.search(text)
    if match is None:
        return None
    return float(match.group().replace(",", ""))


class NumericScorer(_Comparing):
    """The output's first number is within a tolerance of the expected."""

    name = "numeric"

    def __init__(self, tolerance: float = 0.0) -> None:
        self.tolerance = tolerance

    def compare(self, example: Example, expected: str, output: str) -> Score:
        """Score 1 when ``|got - expected| <= tolerance``."""
        want = first_number(expected)
        if want is None:
            return Score(
                None,
                error=f"expected output of example {example.id} is not a "
                f"number: {_quote(expected)}",
            )
        got = first_number(output)
        if got is None:
            return Score(
                0.0,
                feedback=f"expected {want:g}, got no number in "
                + _quote(output),
            )
        # The relative term absorbs float rounding when tolerance is 0.
        if math.isclose(got, want, rel_tol=1e-9, abs_tol=self.tolerance):
            return Score(1.0, feedback=f"{got:g} is within tolerance")
        return Score(
            0.0,
            feedback=(
                f"expected {want:g} (±{self.tolerance:g}), got {got:g} in "
                + _quote(output)
            ),
        )


# The judge's reply; the rubric, input and output go in the user message.
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
            doc = _parse_json(text.strip())
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
        return _as_text(inputs["input"])
    return "\n".join(f"{name}: {_as_text(v)}" for name, v in inputs.items())


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
                error="judge answer unparseable: " + _quote(answer.text),
                judge=answer,
            )
        value, reason = parsed
        feedback = reason[:FEEDBACK_CHARS] or f"judge scored {value:.2f}"
        return Score(value, feedback=feedback, judge=answer)


class PythonScorer:
    """A function from the Python driver scores the output.

    ``fn(example, output)``, sync or async, returns a float in [0, 1], a
    bool, or ``(float, feedback)``. It raising, or returning anything
    else, leaves the example unscored with the reason as its error.
    """

    name = "python"
    model_calls = 0

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.label = getattr(fn, "__name__", type(fn).__name__)

    async def score(
        self, example: Example, output: str, call: ModelCall
    ) -> Score:
        """Call the function and check what it returned."""
        try:
            result = self.fn(example, output)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            return Score(
                None,
                error=f"python scorer {self.label} raised "
                f"{type(error).__name__}: {error}",
            )
        feedback: str | None = None
        if isinstance(result, tuple) and len(result) == 2:
            result, feedback = result[0], str(result[1])
        if isinstance(result, bool):
            result = 1.0 if result else 0.0
        if not _is_number(result) or not 0 <= result <= 1:
            return Score(
                None,
                error=f"python scorer {self.label} returned {result!r}; "
                "it must return a number in [0, 1], a bool, or "
                "(number, feedback)",
            )
        value = float(result)
        if feedback is None and value < 1:
            want = ""
            if example.expected is not None:
                want = f"expected {_quote(example.expected)}, "
            feedback = f"{self.label} scored {value:g}: {want}got " + (
                _quote(output)
            )
        return Score(value, feedback=feedback)


def build_scorer(
    config: ScorerConfig, python: Callable[..., Any] | None = None
) -> Scorer:
    """The scorer a run's configuration asks for.

    Args:
        config: The run's scorer configuration.
        python: The scoring function, for kind ``python``; other kinds
            ignore it (the driver hands over whatever it was given).

    Returns:
        The scorer.

    Raises:
        ValueError: A parameter is missing or wrong (e.g. kind
            ``python`` without a function, or a pattern that is not a
            regular expression).
    """
    kind = config.kind
    if kind == "python":
        if python is None or not callable(python):
            raise ValueError(
                "scorer kind 'python' needs a scoring function "
                "(pass python=fn)"
            )
        return PythonScorer(python)
    if kind == "exact":
        return ExactScorer(config.case_sensitive)
    if kind == "normalized":
        return NormalizedScorer()
    if kind == "contains":
        return ContainsScorer(config.case_sensitive)
    if kind == "regex":
        if not config.pattern:
            raise ValueError("scorer.pattern is required for regex")
        try:
            return RegexScorer(config.pattern)
        except re.error as error:
            raise ValueError(
                f"scorer.pattern {config.pattern!r} is not a valid regular "
                f"expression: {error}"
            ) from error
    if kind == "json_field":
        if not config.field:
            raise ValueError("scorer.field is required for json_field")
        return JsonFieldScorer(config.field)
    if kind == "numeric":
        return NumericScorer(config.tolerance)
    if kind == "llm_judge":
        if not config.judge_model:
            raise ValueError("scorer.judgeModel is required for llm_judge")
        return JudgeScorer(config.judge_model, config.rubric)
    raise ValueError(f"unknown scorer kind {kind!r}")
