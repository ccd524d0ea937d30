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

import re
from collections.abc import Callable
from typing import Any

from optimizer.config import ScorerConfig
from optimizer.protocols import Scorer
from optimizer.scoring.compare import (
    ContainsScorer,
    ExactScorer,
    JsonFieldScorer,
    NormalizedScorer,
    NumericScorer,
    RegexScorer,
    first_number,
    normalize,
)
from optimizer.scoring.judge import JudgeScorer, parse_judge_score
from optimizer.scoring.python import PythonScorer

__all__ = [
    "ContainsScorer",
    "ExactScorer",
    "JsonFieldScorer",
    "JudgeScorer",
    "NormalizedScorer",
    "NumericScorer",
    "PythonScorer",
    "RegexScorer",
    "build_scorer",
    "first_number",
    "normalize",
    "parse_judge_score",
]


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
