"""A Python function from the driver scores the output."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from optimizer.protocols import ModelCall, Score
from optimizer.records import Example
from optimizer.scoring._common import is_number, quote


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
        if not is_number(result) or not 0 <= result <= 1:
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
                want = f"expected {quote(example.expected)}, "
            feedback = f"{self.label} scored {value:g}: {want}got " + (
                quote(output)
            )
        return Score(value, feedback=feedback)
