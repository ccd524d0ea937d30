"""Evaluating a candidate: the adapter fanned out over the cluster.

:class:`CandidateEvaluation` is GEPA's narrow adapter: given examples
and a candidate prompt, ask the target model (through the run's
:class:`~optimizer.protocols.ModelCall`, so answers are stored before
they are scored) and score each answer. An example whose call failed,
or whose judge failed, is an outcome with an error: never a wrong answer
and never an exception. :class:`LocalEvaluator` runs many evaluations
at once in this process; ``optimizer.cluster`` runs them as Ray tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from optimizer.config import RunConfig
from optimizer.dataset import render_user_message
from optimizer.protocols import (
    EvalRequest,
    EvaluationAdapter,
    ModelCall,
    Scorer,
)
from optimizer.records import Candidate, Example, Outcome
from providers.base import CompletionRequest


class CandidateEvaluation:
    """Ask the target model and score, one example at a time, in parallel.

    Args:
        config: The run's configuration (target model, template).
        call: The run's model calls.
        scorer: Scores each answer.
    """

    def __init__(
        self, config: RunConfig, call: ModelCall, scorer: Scorer
    ) -> None:
        self._config = config
        self._call = call
        self._scorer = scorer

    async def evaluate(
        self, batch: Sequence[Example], candidate: Candidate
    ) -> list[Outcome]:
        """One outcome per example, in the batch's order."""
        return list(
            await asyncio.gather(
                *(self._one(example, candidate) for example in batch)
            )
        )

    async def _one(self, example: Example, candidate: Candidate) -> Outcome:
        try:
            user = render_user_message(self._config.user_template, example)
        except KeyError as missing:
            return Outcome(
                example.id,
                None,
                None,
                error=f"example {example.id} has no variable {missing}",
            )
        request = CompletionRequest.from_prompts(
            candidate.prompt,
            user,
            temperature=self._config.temperature,
            max_tokens=self._config.max_tokens,
        )
        answer = await self._call(self._config.target_model, request)
        if answer.text is None:
            return Outcome(
                example.id,
                None,
                None,
                error=answer.error,
                calls=answer.calls,
                cost=answer.cost,
                input_tokens=answer.input_tokens,
                output_tokens=answer.output_tokens,
            )
        verdict = await self._scorer.score(example, answer.text, self._call)
        spent = [answer] if verdict.judge is None else [answer, verdict.judge]
        return Outcome(
            example.id,
            answer.text,
            verdict.value,
            error=verdict.error,
            feedback=verdict.feedback,
            calls=sum(a.calls for a in spent),
            cost=sum(a.cost for a in spent),
            input_tokens=sum(a.input_tokens for a in spent),
            output_tokens=sum(a.output_tokens for a in spent),
        )


class LocalEvaluator:
    """Runs evaluations concurrently in this process's event loop."""

    def __init__(self, adapter: EvaluationAdapter) -> None:
        self._adapter = adapter

    async def evaluate_all(
        self, requests: Sequence[EvalRequest]
    ) -> list[list[Outcome]]:
        """The outcomes of each request, in the requests' order."""
        return list(
            await asyncio.gather(
                *(
                    self._adapter.evaluate(r.examples, r.candidate)
                    for r in requests
                )
            )
        )
