"""The search loop: propose, screen on a minibatch, confirm on validation.

One iteration, GEPA's reflective mutation step by step::

    select a parent (Pareto over validation)    no calls
    evaluate it on a minibatch                  save
    ask the meta model for new prompts          save
    screen them on the same minibatch           save
    validate those that beat the parent, and
    keep the best                               save

Every random choice of iteration ``i`` comes from the seed and ``i``,
and the state is saved after each step, so a run cut short resumes at
the step it was in and ends exactly as an uninterrupted run would: the
steps it repeats ask only for answers the model-call layer has stored.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence

from optimizer.config import RunConfig
from optimizer.dataset import render_user_message
from optimizer.protocols import EvalRequest, Evaluator
from optimizer.records import Candidate, Example, Outcome
from optimizer.state import IterationProgress, RunState
from optimizer.strategies.proposal import Failure, ParentView, Proposer
from optimizer.strategies.sampling import EpochSampler
from optimizer.strategies.selection import (
    CandidateSelector,
    ParetoSelector,
    best_candidate,
    pareto_front,
)
from optimizer.strategies.stopping import StopConditions

#: Other Pareto-front prompts shown to the meta model beside the parent.
CONTEXT_PARENTS = 2
#: The parent's latest children that did no better, shown to the meta
#: model as already tried.
TRIED_SHOWN = 4


def paired_scores(
    parent: Sequence[Outcome], child: Sequence[Outcome]
) -> tuple[float | None, float | None, list[str]]:
    """Mean scores of child and parent on the examples both had scored.

    Args:
        parent: The parent's outcomes on a minibatch.
        child: The child's outcomes on the same minibatch.

    Returns:
        ``(child mean, parent mean, example ids)``; means are None when
        no example was scored on both sides (errors are no evidence).
    """
    parent_scores = {o.example_id: o.score for o in parent}
    ids: list[str] = []
    child_total = parent_total = 0.0
    for outcome in child:
        before = parent_scores.get(outcome.example_id)
        if outcome.score is None or before is None:
            continue
        ids.append(outcome.example_id)
        child_total += outcome.score
        parent_total += before
    if not ids:
        return None, None, []
    return child_total / len(ids), parent_total / len(ids), ids


class SearchLoop:
    """Runs (or resumes) one run's search until a stop condition.

    Args:
        config: The run's configuration.
        state: The state to start or resume from (updated in place).
        train: Examples for minibatches.
        validation: Examples for confirming candidates.
        evaluator: Evaluates candidates, many at once.
        proposer: Writes new prompts.
        scorer_calls: Model calls one score takes (0, or 1 for a judge).
        save: Persists the state (called after every step).
        is_canceled: Whether the run was asked to stop.
        clock: Seconds on a monotonic clock (for the wall-time limit).
        selector: Chooses parents; GEPA's Pareto selection by default.
    """

    def __init__(
        self,
        *,
        config: RunConfig,
        state: RunState,
        train: Sequence[Example],
        validation: Sequence[Example],
        evaluator: Evaluator,
        proposer: Proposer,
        scorer_calls: int,
        save: Callable[[RunState], Awaitable[None]],
        is_canceled: Callable[[], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        selector: CandidateSelector | None = None,
    ) -> None:
        if not validation:
            raise ValueError("a search needs validation examples")
        self.config = config
        self.state = state
        self._validation = tuple(validation)
        self._examples = {e.id: e for e in (*train, *validation)}
        self._evaluator = evaluator
        self._proposer = proposer
        self._calls_per_example = 1 + scorer_calls
        self._save = save
        self._is_canceled = is_canceled
        self._clock = clock
        self._selector = selector or ParetoSelector()
        self._sampler = EpochSampler(
            train, config.minibatch_size, seed=config.seed
        )

    async def run(self) -> RunState:
        """Search until a stop condition; the reason is in the state.

        Returns:
            The final state, ``stop_reason`` set.
        """
        state = self.state
        state.stop_reason = None
        stops = StopConditions.from_budget(
            self.config.budget,
            clock=self._clock,
            started=self._clock(),
            is_canceled=self._is_canceled,
        )
        seeds = [
            c for c in state.candidates if c.iteration == 0 and not c.validated
        ]
        if not state.candidates:
            return await self._stop("no_candidates")
        if seeds:
            planned = len(seeds) * self._validation_calls()
            reason = await stops.over_budget(state, planned)
            if reason is not None:
                return await self._stop(reason)
            await self._validate_seeds(seeds)
        while True:
            progress = state.progress
            if progress is None or progress.iteration != state.iteration + 1:
                begun = await self._begin(stops)
                if isinstance(begun, str):
                    return await self._stop(begun)
                progress = begun
            await self._iterate(progress)

    # Budget -----------------------------------------------------------

    def _validation_calls(self) -> int:
        return len(self._validation) * self._calls_per_example

    def _planned_calls(self, count: int) -> int:
        """The most calls an iteration asking ``count`` candidates makes."""
        screening = self._sampler.size * self._calls_per_example * (count + 1)
        return screening + 1 + count * self._validation_calls()

    # Steps ------------------------------------------------------------

    async def _validate_seeds(self, seeds: list[Candidate]) -> None:
        state = self.state
        await self._validate(seeds)
        baseline = best_candidate(
            [c for c in state.candidates if c.iteration == 0]
        )
        state.baseline_id = state.best_id = baseline.id
        await self._save(state)

    async def _validate(self, candidates: list[Candidate]) -> None:
        if not candidates:
            return
        results = await self._evaluator.evaluate_all(
            [EvalRequest(c, self._validation) for c in candidates]
        )
        for candidate, outcomes in zip(candidates, results, strict=True):
            self.state.charge_outcomes(outcomes)
            candidate.validation = {o.example_id: o.score for o in outcomes}

    async def _begin(self, stops: StopConditions) -> IterationProgress | str:
        """Plan the next iteration, or say why there is none."""
        state = self.state
        reason = await stops.check(state, self._planned_calls(1))
        if reason is not None:
            return reason
        scored = [
            c for c in state.candidates if c.validation_score is not None
        ]
        if not scored:
            return "no_candidates"
        count = self.config.budget.candidates_per_iteration
        # Fewer candidates rather than none when the budget is tight.
        while count > 1 and await stops.over_budget(
            state, self._planned_calls(count)
        ):
            count -= 1
        iteration = state.iteration + 1
        rng = random.Random(f"{self.config.seed}:{iteration}")
        parent = self._selector.select(scored, rng)
        batch = self._sampler.sample(iteration, rng)
        state.progress = IterationProgress(
            iteration, parent.id, [e.id for e in batch], count
        )
        return state.progress

    async def _iterate(self, progress: IterationProgress) -> None:
        """Do the remaining steps of the iteration under way."""
        state = self.state
        parent = state.candidate(progress.parent_id)
        batch = tuple(self._examples[i] for i in progress.example_ids)
        if progress.parent_outcomes is None:
            [outcomes] = await self._evaluator.evaluate_all(
                [EvalRequest(parent, batch)]
            )
            state.charge_outcomes(outcomes)
            progress.parent_outcomes = outcomes
            await self._save(state)
        if progress.proposed is None:
            progress.proposed = await self._propose(parent, progress)
            await self._save(state)
        children = [state.candidate(i) for i in progress.proposed]
        if progress.screened is None:
            progress.screened = await self._screen(children, batch, progress)
            await self._save(state)
        await self._validate([state.candidate(i) for i in progress.screened])
        self._finish(progress.iteration, parent, children)
        await self._save(state)

    async def _propose(
        self, parent: Candidate, progress: IterationProgress
    ) -> list[str]:
        state = self.state
        views = [
            ParentView(
                parent,
                parent.validation_score,
                self._failures(progress.parent_outcomes or []),
            )
        ]
        scored = [
            c for c in state.candidates if c.validation_score is not None
        ]
        others = [c for c, _ in pareto_front(scored) if c.id != parent.id]
        others.sort(key=lambda c: -(c.validation_score or 0.0))
        views += [
            ParentView(c, c.validation_score, [])
            for c in others[:CONTEXT_PARENTS]
        ]
        # Children of this parent that did no better: shown so the meta
        # model moves on (and so a repeated parent gets a new question,
        # not the stored answer to the old one).
        tried = [
            c.prompt
            for c in state.candidates
            if parent.id in c.parents
            and not (
                c.validation_score is not None
                and parent.validation_score is not None
                and c.validation_score > parent.validation_score
            )
        ][-TRIED_SHOWN:]
        batch = await self._proposer.propose(
            views, progress.count, tried=tried
        )
        if batch.answer is not None:
            state.charge_answer(batch.answer)
        state.discarded_proposals += batch.discarded
        known = {c.prompt for c in state.candidates}
        ids = []
        for proposal in batch.proposals:
            # An earlier candidate's prompt again adds nothing to learn.
            if proposal.prompt in known:
                state.discarded_proposals += 1
                continue
            known.add(proposal.prompt)
            child = Candidate(
                id=state.next_id(),
                prompt=proposal.prompt,
                parents=[parent.id],
                iteration=progress.iteration,
                rationale=proposal.rationale,
            )
            state.candidates.append(child)
            ids.append(child.id)
        return ids

    def _failures(self, outcomes: Sequence[Outcome]) -> list[Failure]:
        """Wrong answers to show; errors are no answers, so not failures."""
        failures: list[Failure] = []
        for o in outcomes:
            if len(failures) >= self.config.failures_shown:
                break
            if o.error is not None or o.output is None or o.score is None:
                continue
            if o.score >= 1.0:  # right: nothing to learn from it
                continue
            example = self._examples[o.example_id]
            try:
                shown = render_user_message(self.config.user_template, example)
            except KeyError:
                shown = str(example.inputs)
            failures.append(
                Failure(shown, example.expected, o.output, o.feedback)
            )
        return failures

    async def _screen(
        self,
        children: list[Candidate],
        batch: tuple[Example, ...],
        progress: IterationProgress,
    ) -> list[str]:
        """Evaluate children on the minibatch; the ids that beat the parent."""
        if not children:
            return []
        results = await self._evaluator.evaluate_all(
            [EvalRequest(c, batch) for c in children]
        )
        passed = []
        for child, outcomes in zip(children, results, strict=True):
            self.state.charge_outcomes(outcomes)
            score, parent_score, example_ids = paired_scores(
                progress.parent_outcomes or [], outcomes
            )
            child.minibatch.append(
                {
                    "iteration": progress.iteration,
                    "score": score,
                    "parentScore": parent_score,
                    "exampleIds": example_ids,
                }
            )
            if (
                score is not None
                and parent_score is not None
                and score > parent_score
            ):
                passed.append(child.id)
        return passed

    def _finish(
        self, iteration: int, parent: Candidate, children: list[Candidate]
    ) -> None:
        """Keep the best, record the iteration, and close it."""
        state = self.state
        validated = [c for c in children if c.validation_score is not None]
        current = state.best
        current_score = None if current is None else current.validation_score
        winner = best_candidate(validated) if validated else None
        if winner is not None and (
            current_score is None
            or (winner.validation_score or 0.0) > current_score
        ):
            state.best_id = winner.id
            state.no_improvement = 0
        else:
            state.no_improvement += 1
        best = state.best
        state.history.append(
            {
                "iteration": iteration,
                "parentId": parent.id,
                "bestId": state.best_id,
                "bestScore": None if best is None else best.validation_score,
                "candidates": [
                    {
                        "id": c.id,
                        "minibatchScore": next(
                            (
                                m["score"]
                                for m in c.minibatch
                                if m["iteration"] == iteration
                            ),
                            None,
                        ),
                        "validationScore": c.validation_score,
                    }
                    for c in children
                ],
            }
        )
        state.iteration = iteration
        state.progress = None

    async def _stop(self, reason: str) -> RunState:
        self.state.stop_reason = reason
        await self._save(self.state)
        return self.state
