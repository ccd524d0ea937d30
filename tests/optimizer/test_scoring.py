"""Every scorer kind: right, wrong (with feedback), and unscorable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from optimizer.config import ScorerConfig
from optimizer.protocols import Score
from optimizer.records import Answer, Example
from optimizer.scoring import (
    build_scorer,
    first_number,
    normalize,
    parse_judge_score,
)
from providers.base import CompletionRequest

pytestmark = pytest.mark.anyio


class JudgeModel:
    """A judge that answers with fixed texts and records what it was asked."""

    def __init__(self, text: str | None, error: str | None = None) -> None:
        self.text = text
        self.error = error
        self.asked: list[tuple[str, CompletionRequest]] = []

    async def __call__(self, model: str, request: CompletionRequest) -> Answer:
        self.asked.append((model, request))
        return Answer(key="k", text=self.text, error=self.error, cost=0.01)


async def no_call(model: str, request: CompletionRequest) -> Answer:
    raise AssertionError("this scorer must not call a model")


def example(expected: str | None = "42", **kwargs: Any) -> Example:
    return Example(
        id="e1", inputs={"input": "What is 6*7?"}, expected=expected, **kwargs
    )


async def score(
    output: str, expected: str | None = "42", **config: Any
) -> Score:
    scorer = build_scorer(ScorerConfig(**config))
    return await scorer.score(example(expected), output, no_call)


# exact


async def test_exact_strips_surrounding_whitespace() -> None:
    result = await score("  42\n", kind="exact")
    assert result.value == 1.0


async def test_exact_wrong_answer_says_expected_and_got() -> None:
    result = await score("The answer is 42.", kind="exact")
    assert result.value == 0.0
    assert result.error is None
    assert result.feedback == "expected '42', got 'The answer is 42.'"


async def test_exact_case_sensitivity_is_configurable() -> None:
    assert (await score("paris", "Paris", kind="exact")).value == 0.0
    insensitive = await score(
        "paris", "Paris", kind="exact", case_sensitive=False
    )
    assert insensitive.value == 1.0


async def test_feedback_cuts_long_outputs() -> None:
    result = await score("x" * 5000, kind="exact")
    assert result.feedback is not None
    assert len(result.feedback) < 300
    assert "…" in result.feedback


# normalized


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Paris.", "paris"),
        ("  PARIS  ", "Paris"),
        ('"Paris"', "Paris"),
        ("**Paris**", "Paris"),
        ("New   York\n City", "new york city"),
        ("\uff30\uff41\uff52\uff49\uff53", "Paris"),  # fullwidth: NFKC
        ("STRASSE", "straße"),  # casefold, not lower
        ("-5", "-5"),
    ],
)
async def test_normalized_matches(output: str, expected: str) -> None:
    result = await score(output, expected, kind="normalized")
    assert result.value == 1.0, result.feedback


@pytest.mark.parametrize(
    ("output", "expected"),
    [("Paris, France", "Paris"), ("-5", "5"), ("50%", "50")],
)
async def test_normalized_mismatches(output: str, expected: str) -> None:
    result = await score(output, expected, kind="normalized")
    assert result.value == 0.0
    assert result.feedback == f"expected {expected!r}, got {output!r}"


def test_normalize_keeps_inner_punctuation() -> None:
    assert normalize("  Hello,   World!  ") == "hello, world"
    assert normalize("U.S.A.") == "u.s.a"


# contains


async def test_contains_finds_the_expected_text() -> None:
    result = await score("The answer is 42.", kind="contains")
    assert result.value == 1.0


async def test_contains_wrong_answer_feedback() -> None:
    result = await score("I do not know", kind="contains")
    assert result.value == 0.0
    assert result.feedback is not None
    assert "'42'" in result.feedback
    assert "'I do not know'" in result.feedback


async def test_contains_case_sensitivity_is_configurable() -> None:
    assert (await score("in PARIS", "Paris", kind="contains")).value == 0.0
    insensitive = await score(
        "in PARIS", "Paris", kind="contains", case_sensitive=False
    )
    assert insensitive.value == 1.0


# regex


async def test_regex_without_group_only_needs_a_match() -> None:
    result = await score("Answer: 41", kind="regex", pattern=r"Answer: \d+")
    assert result.value == 1.0


async def test_regex_without_expected_only_needs_a_match() -> None:
    result = await score("Answer: 7", None, kind="regex", pattern=r"(\d+)")
    assert result.value == 1.0


async def test_regex_group_is_compared_to_expected() -> None:
    right = await score("Answer: 42", kind="regex", pattern=r"Answer: (\d+)")
    assert right.value == 1.0
    wrong = await score("Answer: 41", kind="regex", pattern=r"Answer: (\d+)")
    assert wrong.value == 0.0
    assert wrong.feedback is not None
    assert "'41'" in wrong.feedback and "'42'" in wrong.feedback


async def test_regex_no_match_feedback_shows_pattern_and_output() -> None:
    result = await score("no idea", kind="regex", pattern=r"Answer: (\d+)")
    assert result.value == 0.0
    assert result.feedback is not None
    assert r"/Answer: (\d+)/" in result.feedback
    assert "'no idea'" in result.feedback


def test_invalid_regex_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        build_scorer(ScorerConfig(kind="regex", pattern="(unclosed"))


# json_field


async def test_json_field_compares_to_the_same_path_in_expected() -> None:
    result = await score(
        '{"answer": {"value": 42, "unit": "m"}}',
        '{"answer": {"value": 42}}',
        kind="json_field",
        field="answer.value",
    )
    assert result.value == 1.0


async def test_json_field_reads_a_fenced_block() -> None:
    output = 'Here you go:\n```json\n{"city": "Paris"}\n```\nDone.'
    result = await score(output, "Paris", kind="json_field", field="city")
    assert result.value == 1.0


async def test_json_field_plain_expected_matches_a_number() -> None:
    result = await score('{"n": 42}', "42", kind="json_field", field="n")
    assert result.value == 1.0
    result = await score('{"n": 42.0}', "42", kind="json_field", field="n")
    assert result.value == 1.0


async def test_json_field_indexes_lists() -> None:
    result = await score(
        '{"items": [{"id": 3}, {"id": 9}]}',
        "9",
        kind="json_field",
        field="items.1.id",
    )
    assert result.value == 1.0


async def test_json_field_wrong_value_feedback() -> None:
    result = await score(
        '{"city": "Lyon"}', "Paris", kind="json_field", field="city"
    )
    assert result.value == 0.0
    assert result.feedback == "field 'city': expected 'Paris', got 'Lyon'"


async def test_json_field_unparseable_output_scores_zero_and_says_so() -> None:
    result = await score("Paris", "Paris", kind="json_field", field="city")
    assert result.value == 0.0
    assert result.error is None
    assert result.feedback is not None
    assert "not valid JSON" in result.feedback


async def test_json_field_missing_in_output_scores_zero() -> None:
    result = await score(
        '{"town": "Paris"}', "Paris", kind="json_field", field="city"
    )
    assert result.value == 0.0
    assert result.feedback is not None
    assert "no field 'city'" in result.feedback


async def test_json_field_missing_in_expected_is_not_scored() -> None:
    result = await score(
        '{"city": "Paris"}',
        '{"town": "Paris"}',
        kind="json_field",
        field="city",
    )
    assert result.value is None
    assert result.error is not None
    assert "e1" in result.error and "'city'" in result.error


# numeric


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The answer is 42.", 42.0),
        ("It costs $1,234.50 in total", 1234.5),
        ("-3 degrees", -3.0),
        ("year-2020", 2020.0),
        (".5 of it", 0.5),
        ("1e3", 1000.0),
        ("1,2345", 1.0),
        ("no digits", None),
    ],
)
def test_first_number(text: str, number: float | None) -> None:
    assert first_number(text) == number


async def test_numeric_within_tolerance() -> None:
    assert (await score("about 42.4", kind="numeric")).value == 0.0
    assert (
        await score("about 42.4", kind="numeric", tolerance=0.5)
    ).value == 1.0


async def test_numeric_accepts_thousands_separators() -> None:
    result = await score("Total: 1,000,000 people", "1000000", kind="numeric")
    assert result.value == 1.0


async def test_numeric_wrong_feedback() -> None:
    result = await score("I think 41", kind="numeric", tolerance=0.5)
    assert result.value == 0.0
    assert result.feedback is not None
    assert "expected 42" in result.feedback and "got 41" in result.feedback


async def test_numeric_output_without_number() -> None:
    result = await score("no idea", kind="numeric")
    assert result.value == 0.0
    assert result.feedback is not None
    assert "no number" in result.feedback


async def test_numeric_expected_not_a_number_is_not_scored() -> None:
    result = await score("42", "forty-two", kind="numeric")
    assert result.value is None
    assert result.error is not None
    assert "not a number" in result.error


# missing expected


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "exact"},
        {"kind": "normalized"},
        {"kind": "contains"},
        {"kind": "json_field", "field": "a"},
        {"kind": "numeric"},
    ],
)
async def test_missing_expected_is_not_scored(config: dict[str, Any]) -> None:
    result = await score("anything", None, **config)
    assert result == Score(None, error="example e1 has no expected output")


# llm_judge


def judge(rubric: str | None = None) -> Any:
    return build_scorer(
        ScorerConfig(kind="llm_judge", judge_model="grader", rubric=rubric)
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Correct and complete.\nSCORE: 0.8", 0.8),
        ("SCORE: 1", 1.0),
        ("**Score:** 7/10", 0.7),
        ("Score = 9", 0.9),
        ('{"score": 0.25, "reason": "partly"}', 0.25),
        ('```json\n{"score": 6}\n```', 0.6),
        ("0.5", 0.5),
        (" 8 ", 0.8),
        ("3/4", 0.75),
        ("SCORE: 0.2\nOn reflection... SCORE: 0.4", 0.4),
    ],
)
def test_parse_judge_score(text: str, value: float) -> None:
    parsed = parse_judge_score(text)
    assert parsed is not None
    assert parsed[0] == pytest.approx(value)


@pytest.mark.parametrize(
    "text", ["looks good to me", "SCORE: 42", "SCORE: -1", "", "7/0"]
)
def test_parse_judge_score_rejects(text: str) -> None:
    assert parse_judge_score(text) is None


async def test_judge_scores_and_returns_its_answer() -> None:
    model = JudgeModel("Right number, no units needed.\nSCORE: 0.9")
    scorer = judge(rubric="The number must be right.")
    assert scorer.model_calls == 1
    result = await scorer.score(example(), "It is 42", model)
    assert result.value == pytest.approx(0.9)
    assert result.feedback == "Right number, no units needed."
    assert result.judge is not None and result.judge.cost == 0.01
    ((name, request),) = model.asked
    assert name == "grader"
    assert request.temperature == 0.0
    prompt = request.messages[-1].content
    for part in (
        "The number must be right.",
        "What is 6*7?",
        "42",
        "It is 42",
    ):
        assert part in prompt
    assert request.system_prompt is not None
    assert "SCORE" in request.system_prompt


async def test_judge_example_rubric_wins() -> None:
    model = JudgeModel("SCORE: 1")
    scorer = judge(rubric="config rubric")
    task = example(rubric="example rubric")
    await scorer.score(task, "42", model)
    prompt = model.asked[0][1].messages[-1].content
    assert "example rubric" in prompt
    assert "config rubric" not in prompt


async def test_judge_without_expected_leaves_it_out() -> None:
    model = JudgeModel("SCORE: 1")
    await judge("Be polite.").score(example(None), "Hello!", model)
    prompt = model.asked[0][1].messages[-1].content
    assert "Expected" not in prompt


async def test_judge_request_is_deterministic() -> None:
    model = JudgeModel("SCORE: 1")
    scorer = judge()
    await scorer.score(example(), "42", model)
    await scorer.score(example(), "42", model)
    assert model.asked[0] == model.asked[1]


async def test_failed_judge_call_is_not_a_zero() -> None:
    model = JudgeModel(None, error="rate_limit: slow down")
    result = await judge().score(example(), "42", model)
    assert result.value is None
    assert result.error == "judge call failed: rate_limit: slow down"
    assert result.judge is not None and result.judge.failed


async def test_unparseable_judge_answer_is_not_scored() -> None:
    model = JudgeModel("I would rather not say.")
    result = await judge().score(example(), "42", model)
    assert result.value is None
    assert result.error == (
        "judge answer unparseable: 'I would rather not say.'"
    )
    # The judge was asked and paid for, whatever it answered.
    assert result.judge is not None
    assert result.judge.text == "I would rather not say."
    assert result.judge.cost == 0.01


# python


async def run_python(fn: Any, output: str = "42") -> Score:
    scorer = build_scorer(ScorerConfig(kind="python"), python=fn)
    assert scorer.model_calls == 0
    return await scorer.score(example(), output, no_call)


async def test_python_float_bool_and_tuple() -> None:
    assert (await run_python(lambda ex, out: 0.5)).value == 0.5
    assert (await run_python(lambda ex, out: out == ex.expected)).value == 1
    assert (await run_python(lambda ex, out: False)).value == 0.0
    result = await run_python(lambda ex, out: (0.25, "too long"))
    assert result == Score(0.25, feedback="too long")


async def test_python_async_function() -> None:
    async def grade(ex: Example, out: str) -> float:
        await asyncio.sleep(0)
        return 1.0

    assert (await run_python(grade)).value == 1.0


async def test_python_default_feedback_on_a_wrong_answer() -> None:
    def grade(ex: Example, out: str) -> float:
        return 0.0

    result = await run_python(grade, "41")
    assert result.feedback == "grade scored 0: expected '42', got '41'"


async def test_python_exception_is_not_scored() -> None:
    def grade(ex: Example, out: str) -> float:
        raise KeyError("label")

    result = await run_python(grade)
    assert result.value is None
    assert result.error == "python scorer grade raised KeyError: 'label'"


@pytest.mark.parametrize("returned", [1.5, -0.1, float("nan"), "high", None])
async def test_python_value_outside_range_is_an_error(returned: Any) -> None:
    result = await run_python(lambda ex, out: returned)
    assert result.value is None
    assert result.error is not None
    assert "must return a number in [0, 1]" in result.error
    assert repr(returned) in result.error


# build_scorer


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("exact", {}),
        ("normalized", {}),
        ("contains", {}),
        ("regex", {"pattern": "x"}),
        ("json_field", {"field": "a"}),
        ("numeric", {}),
        ("llm_judge", {"judge_model": "m"}),
    ],
)
def test_build_scorer_names_the_kind(kind: str, extra: dict[str, Any]) -> None:
    scorer = build_scorer(ScorerConfig(kind=kind, **extra))
    assert scorer.name == kind


def test_python_kind_needs_a_function() -> None:
    with pytest.raises(ValueError, match="python=fn"):
        build_scorer(ScorerConfig(kind="python"))


def test_function_with_another_kind_is_ignored() -> None:
    scorer = build_scorer(ScorerConfig(kind="exact"), python=lambda e, o: 0)
    assert scorer.name == "exact"
