"""The seams of a run: model calls, scoring, evaluation and its fan-out.

Each is a small protocol so the search loop runs the same against Ray
tasks and the cluster's workers, or against in-memory fakes in tests::

    Evaluator.evaluate_all(requests)        fans out (Ray tasks), one
      └── EvaluationAdapter.evaluate(...)   per (candidate, examples)
            ├── ModelCall(model, request)   stored answer, or a call
            └── Scorer.score(example, ...)  after the answer is stored
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from optimizer.records import Answer, Candidate, Example, Outcome
from providers.base import CompletionRequest


class ModelCall(Protocol):
    """One model call of a run, under the model's limits and retries.

    Answers are stored before they are returned, keyed by the request,
    so asking again (a resumed run) returns the stored answer with
    ``fresh=False`` and makes no call. A call that fails for good is an
    :class:`Answer` with ``text=None``: never an exception.
    """

    async def __call__(self, model: str, request: CompletionRequest) -> Answer:
        """Answer ``request`` with catalog model ``model``."""
        ...


@dataclass(frozen=True, slots=True)
class Score:
    """A scorer's verdict on one output.

    Attributes:
        value: In [0, 1], higher is better; None when it could not be
            scored (an LLM judge's call failed).
        feedback: Why, in a sentence (shown to the meta model).
        error: Why it was not scored, when ``value`` is None.
        judge: The judge's answer, when a model was asked (its spending
            is charged to the run).
    """

    value: float | None
    feedback: str | None = None
    error: str | None = None
    judge: Answer | None = None


class Scorer(Protocol):
    """Scores one output against one example; higher is better.

    Attributes:
        name: The scorer's kind, as configured.
        model_calls: Model calls one score takes (1 for an LLM judge),
            so the loop can plan its budget before it spends.
    """

    name: str
    model_calls: int

    async def score(
        self, example: Example, output: str, call: ModelCall
    ) -> Score:
        """Score ``output``; ``call`` reaches a judge model if needed."""
        ...


class EvaluationAdapter(Protocol):
    """Evaluates one candidate on a batch: the part run in parallel."""

    async def evaluate(
        self, batch: Sequence[Example], candidate: Candidate
    ) -> list[Outcome]:
        """One outcome per example, in the batch's order."""
        ...


@dataclass(frozen=True, slots=True)
class EvalRequest:
    """One candidate to evaluate on some examples."""

    candidate: Candidate
    examples: tuple[Example, ...]


class Evaluator(Protocol):
    """Runs many evaluations at once (bounded only by model limits)."""

    async def evaluate_all(
        self, requests: Sequence[EvalRequest]
    ) -> list[list[Outcome]]:
        """The outcomes of each request, in the requests' order."""
        ...
