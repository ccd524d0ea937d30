"""Driving one run to its end: claim, search, save, report.

:class:`RunDriver` is a plain class (testable without Ray): it claims
a stored run through its lease, rebuilds the search from the run's
configuration and saved state, runs the loop with every step saved
(renewing the lease as it goes), and stores the result. The cluster's
optimizer actor and Python driver scripts both drive runs with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId

from optimizer.answers import MongoAnswerStore
from optimizer.calls import StoredModelCall
from optimizer.cluster import RayEvaluator, RunModels
from optimizer.config import RunConfig
from optimizer.dataset import split_dataset
from optimizer.loop import SearchLoop
from optimizer.protocols import Evaluator
from optimizer.records import Example
from optimizer.report import summarize
from optimizer.runs import (
    CANCELED,
    FAILED,
    LEASE_SECONDS,
    SUCCEEDED,
    LeaseLost,
    RunStore,
)
from optimizer.scoring import build_scorer
from optimizer.state import RunState
from optimizer.strategies.proposal import MetaProposer
from pipeline.catalog import ModelCatalog, Pricing
from pipeline.logging import get_logger
from pipeline.store import Store
from providers.base import Completion, CompletionRequest

log = get_logger(__name__)

#: Calls a provider's worker: ``(provider, model, request)``, as
#: :meth:`pipeline.cluster.handles.WorkerHandles.complete` does.
ProviderComplete = Callable[
    [str, str, CompletionRequest], Awaitable[Completion]
]

#: Builds a run's evaluator (Ray tasks by default; tests run in-process).
EvaluatorFactory = Callable[
    [str, RunConfig, RunModels, Callable[..., Any] | None], Evaluator
]


def run_models(config: RunConfig) -> set[str]:
    """Every catalog model a run calls."""
    names = {config.target_model, config.meta_model}
    if config.scorer.judge_model:
        names.add(config.scorer.judge_model)
    return names


def progress_of(state: RunState, config: RunConfig) -> dict[str, Any]:
    """The run's progress, as shown by ``GET /runs/{id}``."""
    best = state.candidate(state.best_id) if state.best_id else None
    baseline = (
        state.candidate(state.baseline_id) if state.baseline_id else None
    )
    return {
        "iteration": state.iteration,
        "iterations": config.budget.iterations,
        "candidates": len(state.candidates),
        "bestId": state.best_id,
        "bestScore": best.validation_score if best else None,
        "baselineScore": baseline.validation_score if baseline else None,
        "calls": state.calls,
        "maxCalls": config.budget.max_calls,
        "cost": state.cost,
        "maxCost": config.budget.max_cost,
        "inputTokens": state.input_tokens,
        "outputTokens": state.output_tokens,
        "discardedProposals": state.discarded_proposals,
    }


class RunDriver:
    """Drives stored runs (one call of :meth:`drive` per run).

    Args:
        store: This process's database.
        owner: This driver's name in run leases.
        complete: Makes one model call through a provider's worker.
        evaluator_factory: Builds a run's evaluator.
        python_scorer: The scorer callable of a ``python`` scorer.
    """

    def __init__(
        self,
        store: Store,
        owner: str,
        complete: ProviderComplete,
        *,
        evaluator_factory: EvaluatorFactory = RayEvaluator,
        python_scorer: Callable[..., Any] | None = None,
    ) -> None:
        self._store = store
        self._runs = RunStore(store)
        self._catalog = ModelCatalog(store)
        self._owner = owner
        self._complete = complete
        self._evaluator_factory = evaluator_factory
        self._python_scorer = python_scorer

    async def drive(self, run_id: ObjectId) -> str | None:
        """Run (or resume) a run to its end, unless another driver has it.

        Returns:
            The run's final status, or None when it was not ours to run
            (or another driver took it over).
        """
        run = await self._runs.claim(run_id, self._owner)
        if run is None:
            return None
        log.info("run_started", run_id=str(run_id), resumed="state" in run)
        heartbeat = asyncio.create_task(self._heartbeat(run_id))
        try:
            return await self._search(run)
        except LeaseLost:
            log.warning("run_taken_over", run_id=str(run_id))
            return None
        except Exception as error:
            log.exception("run_failed", run_id=str(run_id))
            with contextlib.suppress(LeaseLost):
                await self._runs.save(
                    run_id,
                    self._owner,
                    {
                        "status": FAILED,
                        "error": f"{type(error).__name__}: {error}",
                    },
                )
            return FAILED
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def release(self) -> int:
        """Free the leases of the runs this driver holds (it retires)."""
        return await self._runs.release(self._owner)

    async def orphans(self) -> list[ObjectId]:
        """Active runs that no live driver holds, or held in our name."""
        return await self._runs.orphans(self._owner)

    async def _heartbeat(self, run_id: ObjectId) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                await self._runs.renew(run_id, self._owner)
            except LeaseLost:
                return
            except Exception as error:
                log.warning("run_lease_renewal_failed", error=str(error))

    async def _search(self, run: dict[str, Any]) -> str:
        run_id: ObjectId = run["_id"]
        config = RunConfig.model_validate(run["config"])
        dataset = await self._runs.get_dataset(None, run["datasetId"])
        examples = [Example.from_doc(e) for e in dataset["examples"]]
        train, validation = split_dataset(examples, config.split, config.seed)
        models = await self._models(config)
        state = (
            RunState.from_doc(run["state"])
            if run.get("state")
            else RunState.start([p["text"] for p in run["workingPrompts"]])
        )

        async def complete(
            model: str, request: CompletionRequest
        ) -> Completion:
            provider = models.providers[model]
            return await self._complete(provider, model, request)

        call = StoredModelCall(
            str(run_id),
            MongoAnswerStore(self._store),
            complete,
            models.pricing,
        )
        scorer = build_scorer(config.scorer, self._python_scorer)

        async def save(state: RunState) -> None:
            await self._runs.save(
                run_id,
                self._owner,
                {
                    "state": state.to_doc(),
                    "progress": progress_of(state, config),
                },
            )

        async def is_canceled() -> bool:
            return await self._runs.cancel_requested(run_id)

        loop = SearchLoop(
            config=config,
            state=state,
            train=train,
            validation=validation,
            evaluator=self._evaluator_factory(
                str(run_id), config, models, self._python_scorer
            ),
            proposer=MetaProposer(call, config.meta_model),
            scorer_calls=scorer.model_calls,
            save=save,
            is_canceled=is_canceled,
        )
        state = await loop.run()
        status = CANCELED if state.stop_reason == "canceled" else SUCCEEDED
        result = None
        if state.baseline_id is not None:
            summary = summarize(
                state.candidates, state.baseline_id, seed=config.seed
            )
            result = {**summary, "stopReason": state.stop_reason}
        await self._runs.save(
            run_id,
            self._owner,
            {
                "status": status,
                "state": state.to_doc(),
                "progress": progress_of(state, config),
                "result": result,
            },
        )
        log.info(
            "run_finished",
            run_id=str(run_id),
            status=status,
            stop_reason=state.stop_reason,
        )
        return status

    async def _models(self, config: RunConfig) -> RunModels:
        providers: dict[str, str] = {}
        pricing: dict[str, Pricing] = {}
        for name in sorted(run_models(config)):
            model = await self._catalog.get(name)
            providers[name] = model["provider"]
            pricing[name] = Pricing.model_validate(model.get("pricing") or {})
        return RunModels(providers, pricing)
