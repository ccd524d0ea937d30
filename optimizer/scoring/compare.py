"""Scorers that compare an output with the example's expected output.

Exact, normalized, contains, regex, JSON field and numeric: each a small
class; a missing expected value leaves the example unscored.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

from optimizer.protocols import ModelCall, Score
from optimizer.records import Example
from optimizer.scoring._common import (
    as_text,
    is_number,
    no_expected,
    parse_json,
    quote,
)


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
            return no_expected(example)
        return self.compare(example, example.expected, output)

    def compare(self, example: Example, expected: str, output: str) -> Score:
        """Score ``output`` against ``expected``."""
        raise NotImplementedError


def _verdict(right: bool, expected: str, output: str, how: str) -> Score:
    if right:
        return Score(1.0, feedback=how)
    return Score(
        0.0, feedback=f"expected {quote(expected)}, got {quote(output)}"
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
                f"expected the output to contain {quote(expected.strip())}"
                f", got {quote(output)}"
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
                + quote(output),
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
                f"{shown} captured {quote(captured or '')}, expected "
                f"{quote(example.expected)}; output was {quote(output)}"
            ),
        )


_MISSING: Any = object()


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


def _same(actual: Any, wanted: Any) -> bool:
    if is_number(actual) and is_number(wanted):
        return bool(float(actual) == float(wanted))
    if isinstance(actual, str) or isinstance(wanted, str):
        # The expected value may be plain text for a JSON number or bool.
        return as_text(actual).strip() == as_text(wanted).strip()
    return as_text(actual) == as_text(wanted)


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
            doc = parse_json(output.strip())
        except ValueError:
            return Score(
                0.0,
                feedback=f"output is not valid JSON: got {quote(output)}",
            )
        actual = _lookup(doc, self.field)
        if actual is _MISSING:
            return Score(
                0.0,
                feedback=f"output JSON has no field {self.field!r}: got "
                + quote(output),
            )
        if _same(actual, wanted):
            return Score(1.0, feedback=f"field {self.field!r} matches")
        return Score(
            0.0,
            feedback=(
                f"field {self.field!r}: expected {quote(as_text(wanted))}"
                f", got {quote(as_text(actual))}"
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
                f"number: {quote(expected)}",
            )
        got = first_number(output)
        if got is None:
            return Score(
                0.0,
                feedback=f"expected {want:g}, got no number in "
                + quote(output),
            )
        # The relative term absorbs float rounding when tolerance is 0.
        if math.isclose(got, want, rel_tol=1e-9, abs_tol=self.tolerance):
            return Score(1.0, feedback=f"{got:g} is within tolerance")
        return Score(
            0.0,
            feedback=(
                f"expected {want:g} (±{self.tolerance:g}), got {got:g} in "
                + quote(output)
            ),
        )
