"""The optimizer's records: examples, answers, outcomes and candidates.

Plain data shared by every part of a run. Each record that is stored
has ``to_doc``/``from_doc`` (camelCase, the database's spelling); each
crosses Ray boundaries by pickle.

One example's failure is data: a model call that still fails after its
retries becomes an :class:`Outcome` with ``error`` set and ``score``
None, which every aggregate leaves out (and counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean
from typing import Any


@dataclass(frozen=True, slots=True)
class Example:
    """One row of a dataset.

    Attributes:
        id: Stable id within the dataset (given, or the row number).
        inputs: Template variables (``{{name}}`` in the user template).
        expected: The expected output, if the scorer compares to one.
        rubric: Grading instructions for an LLM judge, if any.
    """

    id: str
    inputs: dict[str, Any]
    expected: str | None = None
    rubric: str | None = None

    def to_doc(self) -> dict[str, Any]:
        """The stored form."""
        doc: dict[str, Any] = {"id": self.id, "inputs": self.inputs}
        if self.expected is not None:
            doc["expected"] = self.expected
        if self.rubric is not None:
            doc["rubric"] = self.rubric
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Example:
        """Read the stored form."""
        return cls(
            id=str(doc["id"]),
            inputs=dict(doc.get("inputs") or {}),
            expected=doc.get("expected"),
            rubric=doc.get("rubric"),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """A model's answer to one request, as stored before it is scored.

    Attributes:
        key: The request's key within its run (see ``optimizer.calls``).
        text: The answer, or None when the call failed for good.
        error: ``"kind: message"`` of the last provider error, or None.
        input_tokens: Tokens the provider billed for the prompt.
        output_tokens: Tokens the provider billed for the answer.
        cost: USD, from the model's catalog pricing.
        calls: Provider calls made for it (retries included).
        fresh: Made now; False when read back from the answer store.
    """

    key: str
    text: str | None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    calls: int = 1
    fresh: bool = True

    @property
    def failed(self) -> bool:
        """Whether the call failed for good (the answer is no evidence)."""
        return self.text is None

    def to_doc(self) -> dict[str, Any]:
        """The stored form (without the run id, which the store adds)."""
        return {
            "key": self.key,
            "text": self.text,
            "error": self.error,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cost": self.cost,
            "calls": self.calls,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Answer:
        """Read the stored form; the answer is not fresh."""
        return cls(
            key=doc["key"],
            text=doc.get("text"),
            error=doc.get("error"),
            input_tokens=int(doc.get("inputTokens", 0)),
            output_tokens=int(doc.get("outputTokens", 0)),
            cost=float(doc.get("cost", 0.0)),
            calls=int(doc.get("calls", 1)),
            fresh=False,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One example evaluated under one candidate.

    Attributes:
        example_id: The example's id.
        output: The target model's answer (None when its call failed).
        score: In [0, 1], higher is better; None when not scored (the
            call, or the judge's call, failed: not a wrong answer).
        error: Why it was not scored, or None.
        feedback: The scorer's explanation (shown to the meta model).
        calls: Model calls it took (target, and judge if any), counted
            the same whether the answers were made now or read back
            from the store, so a resumed run accounts as the original.
        cost: USD of those calls.
        input_tokens: Prompt tokens of those calls.
        output_tokens: Answer tokens of those calls.
    """

    example_id: str
    output: str | None
    score: float | None
    error: str | None = None
    feedback: str | None = None
    calls: int = 0
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0

    def to_doc(self) -> dict[str, Any]:
        """The stored form (outputs are kept short in run documents)."""
        return {
            "exampleId": self.example_id,
            "output": self.output,
            "score": self.score,
            "error": self.error,
            "feedback": self.feedback,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Outcome:
        """Read the stored form (spending is not kept per outcome)."""
        return cls(
            example_id=str(doc["exampleId"]),
            output=doc.get("output"),
            score=doc.get("score"),
            error=doc.get("error"),
            feedback=doc.get("feedback"),
        )


def mean_score(outcomes: list[Outcome]) -> float | None:
    """The mean score of the scored outcomes, or None if none was."""
    scores = [o.score for o in outcomes if o.score is not None]
    return fmean(scores) if scores else None


@dataclass(slots=True)
class Candidate:
    """A prompt the search has tried, with its lineage and scores.

    Attributes:
        id: ``c0``, ``c1``, ... in order of creation (seeds first).
        prompt: The system prompt text.
        parents: Ids of the candidates it was derived from.
        iteration: The iteration that proposed it (0 for seeds).
        rationale: The meta model's reason for it (None for seeds).
        minibatch: Per iteration screened: ``{"iteration", "score",
            "parentScore", "exampleIds"}``.
        validation: Validation score per example id (None: not scored).
        validation_errors: Validation examples not scored, by error.
    """

    id: str
    prompt: str
    parents: list[str] = field(default_factory=list)
    iteration: int = 0
    rationale: str | None = None
    minibatch: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, float | None] | None = None

    @property
    def validated(self) -> bool:
        """Whether it has been evaluated on the validation set."""
        return self.validation is not None

    @property
    def validation_score(self) -> float | None:
        """Mean validation score over the scored examples."""
        if not self.validation:
            return None
        scores = [s for s in self.validation.values() if s is not None]
        return fmean(scores) if scores else None

    @property
    def validation_errors(self) -> int:
        """Validation examples left unscored (their calls failed)."""
        if not self.validation:
            return 0
        return sum(1 for s in self.validation.values() if s is None)

    def to_doc(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "parents": list(self.parents),
            "iteration": self.iteration,
            "rationale": self.rationale,
            "minibatch": list(self.minibatch),
            "validation": self.validation,
            "validationScore": self.validation_score,
            "validationErrors": self.validation_errors,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Candidate:
        """Read the stored form."""
        return cls(
            id=doc["id"],
            prompt=doc["prompt"],
            parents=list(doc.get("parents") or []),
            iteration=int(doc.get("iteration", 0)),
            rationale=doc.get("rationale"),
            minibatch=list(doc.get("minibatch") or []),
            validation=doc.get("validation"),
        )
