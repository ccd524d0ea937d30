"""Evaluations as Ray tasks: the only part of a run fanned out.

Each :class:`~optimizer.protocols.EvalRequest` (a candidate and its
examples, split into chunks of at most :data:`CHUNK_EXAMPLES`) becomes
one Ray task. A task builds its collaborators from its own process's
environment (settings, database, worker handles; secrets never travel
as arguments), evaluates its examples concurrently through the provider
workers (so the models' limits bound the parallelism, not the number
of tasks) and returns the outcomes. Tasks take no CPU slot: they wait
on the network, and with CPU slots a 2-core machine would run two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from optimizer.answers import MongoAnswerStore
from optimizer.calls import StoredModelCall
from optimizer.config import RunConfig
from optimizer.evaluate import CandidateEvaluation
from optimizer.protocols import EvalRequest
from optimizer.records import Candidate, Example, Outcome
from optimizer.scoring import build_scorer
from pipeline.catalog import Pricing
from pipeline.cluster.handles import WorkerHandles
from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client
from pipeline.store.deployed_version import DeployedVersion
from providers.base import Completion, CompletionRequest

#: Examples one task evaluates (more make several tasks).
CHUNK_EXAMPLES = 100


@dataclass(frozen=True)
class RunModels:
    """What a task needs to know of the run's models.

    Attributes:
        providers: Provider (registry name) of each model, by name.
        pricing: Catalog pricing of each model, by name.
    """

    providers: Mapping[str, str]
    pricing: Mapping[str, Pricing]


async def _evaluate_chunk(
    run_id: str,
    config: RunConfig,
    models: RunModels,
    python_scorer: Callable[..., Any] | None,
    candidate: Candidate,
    examples: Sequence[Example],
) -> list[Outcome]:
    settings = Settings.from_env(generate_dev_secrets=False)
    assert settings.db_connection_string, "DB_CONNECTION_STRING is not set"
    store = Store(
        create_mongo_client(
            settings.db_connection_string, app_name="metasync-optimizer"
        ),
        settings.db_name,
    )
    handles = WorkerHandles(settings)
    # The deployed workers, even where this node's code differs.
    await handles.follow_deployed(DeployedVersion(store))

    async def complete(model: str, request: CompletionRequest) -> Completion:
        return await handles.complete(models.providers[model], model, request)

    try:
        call = StoredModelCall(
            run_id, MongoAnswerStore(store), complete, models.pricing
        )
        scorer = build_scorer(config.scorer, python_scorer)
        adapter = CandidateEvaluation(config, call, scorer)
        return await adapter.evaluate(examples, candidate)
    finally:
        await store.close()


@ray.remote(num_cpus=0, max_retries=3)
def evaluate_task(
    run_id: str,
    config: RunConfig,
    models: RunModels,
    python_scorer: Callable[..., Any] | None,
    candidate: Candidate,
    examples: Sequence[Example],
) -> list[Outcome]:
    """Evaluate ``candidate`` on ``examples`` (a Ray task).

    Retried by Ray if its process dies; the answers it had stored are
    read back, not paid for again.
    """
    return asyncio.run(
        _evaluate_chunk(
            run_id, config, models, python_scorer, candidate, examples
        )
    )


class RayEvaluator:
    """Fans a run's evaluations out as Ray tasks and gathers them.

    Args:
        run_id: The run the answers belong to.
        config: The run's configuration.
        models: Providers and pricing of the run's models.
        python_scorer: The driver's scorer callable, for ``python``.
    """

    def __init__(
        self,
        run_id: str,
        config: RunConfig,
        models: RunModels,
        python_scorer: Callable[..., Any] | None = None,
    ) -> None:
        self._run_id = run_id
        self._config = config
        self._models = models
        self._python_scorer = python_scorer

    async def evaluate_all(
        self, requests: Sequence[EvalRequest]
    ) -> list[list[Outcome]]:
        """The outcomes of each request, in the requests' order."""
        refs: list[list[Any]] = []
        for request in requests:
            chunks = [
                request.examples[start : start + CHUNK_EXAMPLES]
                for start in range(0, len(request.examples), CHUNK_EXAMPLES)
            ]
            refs.append(
                [
                    evaluate_task.remote(
                        self._run_id,
                        self._config,
                        self._models,
                        self._python_scorer,
                        request.candidate,
                        chunk,
                    )
                    for chunk in chunks
                ]
            )
        results: list[list[Outcome]] = []
        for chunk_refs in refs:
            outcomes: list[Outcome] = []
            for chunk in await asyncio.gather(*chunk_refs):
                outcomes.extend(chunk)
            results.append(outcomes)
        return results
