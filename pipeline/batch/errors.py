"""Why an offline batch cannot go on as asked.

::

    BatchError                 the batch stops; the message says why
    ├── InvalidInput           bad lines, each with its number and why
    └── StateMismatch          the output's state belongs to another batch

Errors of the service itself (a refused key, a quota, an outage) are
the domain errors of :mod:`pipeline.errors`, whichever the transport.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LineProblem:
    """One bad input line."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class BatchError(Exception):
    """The batch cannot go on; ``str(error)`` is one line for the user."""


class InvalidInput(BatchError):
    """The input has bad lines.

    Attributes:
        problems: The first bad lines, in file order.
        count: How many lines are bad in all.
        outcome: What became of the batch.
    """

    def __init__(
        self,
        problems: list[LineProblem],
        count: int,
        outcome: str = "nothing was submitted",
    ) -> None:
        super().__init__(
            f"{count} bad line(s); {outcome}"
            + (f". {problems[0]}" if problems else "")
        )
        self.problems = problems
        self.count = count
        self.outcome = outcome


class StateMismatch(BatchError):
    """The output or its state file does not belong to this batch."""
