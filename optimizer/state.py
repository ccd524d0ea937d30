"""A run's saved state: everything the search needs to resume.

The loop saves it after every step that spent model calls. A completed
iteration leaves ``progress`` None; an iteration cut short by a crash
leaves what it had done in :class:`IterationProgress`, so the resumed
run goes on from the next step instead of redoing (and recounting) the
steps already saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optimizer.records import Answer, Candidate, Outcome


@dataclass(slots=True)
class IterationProgress:
    """The steps of the current iteration done so far.

    Attributes:
        iteration: The iteration under way.
        parent_id: The parent it improves.
        example_ids: Its minibatch.
        count: Candidates asked of the meta model (after the budget).
        parent_outcomes: The parent on the minibatch, once evaluated.
        proposed: Ids of the candidates proposed, once proposed.
        screened: Ids that beat the parent on the minibatch, once
            screened.
    """

    iteration: int
    parent_id: str
    example_ids: list[str]
    count: int
    parent_outcomes: list[Outcome] | None = None
    proposed: list[str] | None = None
    screened: list[str] | None = None

    def to_doc(self) -> dict[str, Any]:
        """The stored form."""
        outcomes = self.parent_outcomes
        return {
            "iteration": self.iteration,
            "parentId": self.parent_id,
            "exampleIds": list(self.example_ids),
            "count": self.count,
            "parentOutcomes": (
                None if outcomes is None else [o.to_doc() for o in outcomes]
            ),
            "proposed": None if self.proposed is None else list(self.proposed),
            "screened": None if self.screened is None else list(self.screened),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> IterationProgress:
        """Read the stored form."""
        outcomes = doc.get("parentOutcomes")
        proposed = doc.get("proposed")
        screened = doc.get("screened")
        return cls(
            iteration=int(doc["iteration"]),
            parent_id=doc["parentId"],
            example_ids=list(doc["exampleIds"]),
            count=int(doc["count"]),
            parent_outcomes=(
                None
                if outcomes is None
                else [Outcome.from_doc(o) for o in outcomes]
            ),
            proposed=None if proposed is None else list(proposed),
            screened=None if screened is None else list(screened),
        )


@dataclass(slots=True)
class RunState:
    """Candidates, spending and progress of one run.

    Attributes:
        candidates: Every candidate tried, seeds first, in id order.
        baseline_id: The best seed on validation (once validated).
        best_id: The best validated candidate so far.
        iteration: Iterations completed.
        calls: Model calls spent (target, judge and meta).
        cost: USD spent.
        input_tokens: Prompt tokens spent.
        output_tokens: Answer tokens spent.
        max_call_cost: The most one model call has cost so far (USD),
            which prices the calls a step plans before it spends.
        discarded_proposals: Meta model proposals that were unusable.
        no_improvement: Iterations in a row without a better best.
        history: One entry per completed iteration.
        stop_reason: Why the search stopped, once it has.
        progress: The iteration under way, if one was cut short.
    """

    candidates: list[Candidate] = field(default_factory=list)
    baseline_id: str | None = None
    best_id: str | None = None
    iteration: int = 0
    calls: int = 0
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    max_call_cost: float = 0.0
    discarded_proposals: int = 0
    no_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    progress: IterationProgress | None = None

    @classmethod
    def start(cls, seed_prompts: Sequence[str]) -> RunState:
        """A fresh state whose candidates are the seed prompts.

        Args:
            seed_prompts: The prompts the run starts from, in order.

        Returns:
            The state, seeds ``c0``, ``c1``, ... not yet validated.
        """
        return cls(
            candidates=[
                Candidate(id=f"c{i}", prompt=prompt)
                for i, prompt in enumerate(seed_prompts)
            ]
        )

    def candidate(self, candidate_id: str) -> Candidate:
        """The candidate with this id.

        Raises:
            KeyError: No such candidate.
        """
        for candidate in self.candidates:
            if candidate.id == candidate_id:
                return candidate
        raise KeyError(candidate_id)

    def next_id(self) -> str:
        """The id the next new candidate gets."""
        # Candidates are only ever appended, so ids stay c0..cN.
        return f"c{len(self.candidates)}"

    @property
    def best(self) -> Candidate | None:
        """The best validated candidate, if any."""
        return None if self.best_id is None else self.candidate(self.best_id)

    def charge(
        self, *, calls: int, cost: float, input_tokens: int, output_tokens: int
    ) -> None:
        """Add one outcome's or answer's spending.

        Args:
            calls: Model calls it took.
            cost: Their USD.
            input_tokens: Their prompt tokens.
            output_tokens: Their answer tokens.
        """
        self.calls += calls
        self.cost += cost
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if calls > 0:
            self.max_call_cost = max(self.max_call_cost, cost / calls)

    def charge_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Add the spending of evaluated outcomes."""
        for o in outcomes:
            self.charge(
                calls=o.calls,
                cost=o.cost,
                input_tokens=o.input_tokens,
                output_tokens=o.output_tokens,
            )

    def charge_answer(self, answer: Answer) -> None:
        """Add the spending of one model answer (the meta model's)."""
        self.charge(
            calls=answer.calls,
            cost=answer.cost,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
        )

    def spending(self) -> dict[str, Any]:
        """What the run has spent, as reported."""
        return {
            "calls": self.calls,
            "cost": self.cost,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "discardedProposals": self.discarded_proposals,
        }

    def to_doc(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "candidates": [c.to_doc() for c in self.candidates],
            "baselineId": self.baseline_id,
            "bestId": self.best_id,
            "iteration": self.iteration,
            **self.spending(),
            "maxCallCost": self.max_call_cost,
            "noImprovement": self.no_improvement,
            "history": [dict(entry) for entry in self.history],
            "stopReason": self.stop_reason,
            "progress": (
                None if self.progress is None else self.progress.to_doc()
            ),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RunState:
        """Read the stored form."""
        progress = doc.get("progress")
        return cls(
            candidates=[Candidate.from_doc(c) for c in doc["candidates"]],
            baseline_id=doc.get("baselineId"),
            best_id=doc.get("bestId"),
            iteration=int(doc.get("iteration", 0)),
            calls=int(doc.get("calls", 0)),
            cost=float(doc.get("cost", 0.0)),
            input_tokens=int(doc.get("inputTokens", 0)),
            output_tokens=int(doc.get("outputTokens", 0)),
            max_call_cost=float(doc.get("maxCallCost", 0.0)),
            discarded_proposals=int(doc.get("discardedProposals", 0)),
            no_improvement=int(doc.get("noImprovement", 0)),
            history=[dict(entry) for entry in doc.get("history") or []],
            stop_reason=doc.get("stopReason"),
            progress=(
                None
                if progress is None
                else IterationProgress.from_doc(progress)
            ),
        )
