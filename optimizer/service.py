"""Runs and datasets as the API offers them: validated, owned, promoted.

Creating a run checks everything that would make it fail later (unknown
models, prompts or dataset, a split that leaves a side empty, a budget
too small to evaluate the starting prompts once, examples the template
or the scorer cannot use) and answers 400 naming each offending field;
nothing is stored then. A stored run is started by the cluster's
optimizer, never inside the request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bson import ObjectId

from optimizer.config import RunConfig
from optimizer.dataset import split_dataset
from optimizer.records import Example
from optimizer.runner import run_models
from optimizer.runs import SUCCEEDED, RunStore
from pipeline.catalog import ModelCatalog, max_tokens_problem
from pipeline.errors import (
    Conflict,
    NotFound,
    QuotaExceeded,
    ValidationFailed,
)
from pipeline.jobs.validation import MAX_ITEM_TEXT_CHARS
from pipeline.prompts import PromptService
from pipeline.spending import client_spend
from pipeline.store import Store
from pipeline.templates import missing_variables, template_shape

#: Largest dataset a run or ``POST /datasets`` accepts.
MAX_EXAMPLES = 10_000
#: Scorers that compare against an example's expected output.
NEEDS_EXPECTED = frozenset(
    {"exact", "normalized", "contains", "json_field", "numeric"}
)


def parse_examples(
    raw: Sequence[dict[str, Any]], field: str = "examples"
) -> list[Example]:
    """Examples from their API form, ids given or numbered.

    Raises:
        ValidationFailed: Naming each bad example.
    """
    if not raw:
        raise ValidationFailed.single(field, "the dataset is empty")
    if len(raw) > MAX_EXAMPLES:
        raise ValidationFailed.single(
            field, f"at most {MAX_EXAMPLES} examples (got {len(raw)})"
        )
    errors: list[dict[str, Any]] = []
    examples: list[Example] = []
    seen: set[str] = set()
    for index, row in enumerate(raw):
        where = f"{field}[{index}]"
        example_id = str(row.get("id") or f"e{index:05d}")
        if example_id in seen:
            errors.append({"field": f"{where}.id", "message": "duplicate id"})
        seen.add(example_id)
        expected = row.get("expected")
        examples.append(
            Example(
                id=example_id,
                inputs=dict(row.get("inputs") or {}),
                expected=None if expected is None else str(expected),
                rubric=row.get("rubric"),
            )
        )
    if errors:
        raise ValidationFailed(f"{len(errors)} bad examples", errors)
    return examples


class RunService:
    """Creates, reads, cancels and promotes a client's runs.

    Args:
        store: The database.
        catalog: The model catalog.
        prompts: The client's stored prompts.
        start: Tells the cluster's optimizer to drive a run.
    """

    def __init__(
        self,
        store: Store,
        catalog: ModelCatalog,
        prompts: PromptService,
        start: Callable[[ObjectId], None],
    ) -> None:
        self._store = store
        self.runs = RunStore(store)
        self._catalog = catalog
        self._prompts = prompts
        self._start = start

    async def create_dataset(
        self,
        client_id: ObjectId,
        name: str | None,
        raw: Sequence[dict[str, Any]],
    ) -> dict[str, Any]:
        """Store a dataset of examples.

        Raises:
            ValidationFailed: Empty, too large or malformed.
        """
        examples = parse_examples(raw)
        return await self.runs.create_dataset(
            client_id,
            name,
            [e.to_doc() for e in examples],
            actor=f"client:{client_id}",
        )

    async def create(
        self,
        client_id: ObjectId | None,
        *,
        name: str | None,
        config: RunConfig,
        working_prompts: Sequence[dict[str, Any]],
        dataset_id: str | None,
        examples: Sequence[dict[str, Any]] | None,
        python_scorer: bool = False,
        budget: float | None = None,
    ) -> dict[str, Any]:
        """Validate and store a run, then have the optimizer start it.

        Args:
            client_id: The owner (None: a driver script's own run).
            name: The run's name.
            config: Its configuration.
            working_prompts: Starting prompts (``{text}`` or
                ``{promptId, promptVersion?}``).
            dataset_id: A stored dataset, or None with ``examples``.
            examples: Inline examples (stored as a new dataset).
            python_scorer: A Python scorer is at hand (driver API only).
            budget: The client's budget quota (USD), if any: the run's
                ``maxCost`` is capped at what is left of it.

        Raises:
            ValidationFailed: Naming every bad field.
            QuotaExceeded: The client's budget is spent.
        """
        actor = f"client:{client_id}"
        if budget is not None and client_id is not None:
            config = await self._within_budget(client_id, config, budget)
        errors: list[dict[str, Any]] = []
        await self._check_models(config, errors)
        prompts = await self._resolve_prompts(
            client_id, working_prompts, errors
        )
        dataset = await self._dataset(client_id, dataset_id, examples)
        data = [Example.from_doc(e) for e in dataset["examples"]]
        errors.extend(self._check_examples(config, data))
        try:
            _, validation = split_dataset(data, config.split, config.seed)
        except ValueError as error:
            errors.append({"field": "split", "message": str(error)})
            validation = []
        if config.scorer.kind == "python" and not python_scorer:
            errors.append(
                {
                    "field": "scorer.kind",
                    "message": "python scorers run only through the "
                    "Python driver API",
                }
            )
        baseline_calls = (
            len(validation)
            * max(1, len(prompts))
            * (2 if config.scorer.kind == "llm_judge" else 1)
        )
        max_calls = config.budget.max_calls
        if validation and max_calls is not None and max_calls < baseline_calls:
            errors.append(
                {
                    "field": "budget.maxCalls",
                    "message": f"{max_calls} calls cannot evaluate the "
                    f"starting prompts once ({baseline_calls} needed)",
                }
            )
        if errors:
            raise ValidationFailed(
                "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                errors,
            )
        run = await self.runs.create_run(
            {
                "clientId": client_id,
                "name": name,
                "config": config.model_dump(by_alias=True),
                "workingPrompts": prompts,
                "datasetId": dataset["_id"],
                "datasetSize": len(data),
                "validationSize": len(validation),
            },
            actor=actor,
        )
        self._start(run["_id"])
        return run

    async def _within_budget(
        self, client_id: ObjectId, config: RunConfig, budget: float
    ) -> RunConfig:
        left = budget - await client_spend(self._store, client_id)
        if left <= 0:
            raise QuotaExceeded(
                f"the budget of {budget} USD is spent", retry_after=3600
            )
        max_cost = config.budget.max_cost
        if max_cost is not None and max_cost <= left:
            return config
        capped = config.budget.model_copy(update={"max_cost": left})
        return config.model_copy(update={"budget": capped})

    async def _check_models(
        self, config: RunConfig, errors: list[dict[str, Any]]
    ) -> None:
        found = await self._catalog.by_names(run_models(config))
        fields = {
            "targetModel": config.target_model,
            "metaModel": config.meta_model,
            "scorer.judgeModel": config.scorer.judge_model,
        }
        for field, name in fields.items():
            if name is not None and name not in found:
                errors.append(
                    {
                        "field": field,
                        "message": f"unknown or inactive model {name!r}",
                    }
                )
        target = found.get(config.target_model)
        if target is not None and (
            too_many := max_tokens_problem(target, config.max_tokens)
        ):
            errors.append({"field": "maxTokens", "message": too_many})

    async def _resolve_prompts(
        self,
        client_id: ObjectId | None,
        working_prompts: Sequence[dict[str, Any]],
        errors: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        if not working_prompts:
            errors.append(
                {
                    "field": "workingPrompts",
                    "message": "give at least one starting prompt",
                }
            )
        resolved: list[dict[str, Any]] = []
        for index, entry in enumerate(working_prompts):
            where = f"workingPrompts[{index}]"
            prompt_id = entry.get("promptId")
            if prompt_id is None or client_id is None:
                resolved.append({"text": entry["text"]})
                continue
            version = entry.get("promptVersion")
            try:
                if version is None:
                    stored = await self._prompts.get(client_id, prompt_id)
                else:
                    stored = await self._prompts.get_version(
                        client_id, prompt_id, version
                    )
            except NotFound:
                errors.append(
                    {
                        "field": f"{where}.promptId",
                        "message": f"unknown prompt {prompt_id}",
                    }
                )
                continue
            resolved.append(
                {
                    "promptId": str(prompt_id),
                    "promptVersion": stored["version"],
                    "text": stored["systemPrompt"],
                }
            )
        return resolved

    async def _dataset(
        self,
        client_id: ObjectId | None,
        dataset_id: str | None,
        examples: Sequence[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        if (dataset_id is None) == (examples is None):
            raise ValidationFailed.single(
                "datasetId", "give datasetId or inline examples (one)"
            )
        if dataset_id is not None:
            try:
                return await self.runs.get_dataset(client_id, dataset_id)
            except NotFound:
                raise ValidationFailed.single(
                    "datasetId", f"unknown dataset {dataset_id}"
                ) from None
        assert examples is not None
        parsed = parse_examples(examples)
        return await self.runs.create_dataset(
            client_id,
            None,
            [e.to_doc() for e in parsed],
            actor=f"client:{client_id}",
        )

    @staticmethod
    def _check_examples(
        config: RunConfig, examples: Sequence[Example]
    ) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        for index, example in enumerate(examples):
            missing = missing_variables(config.user_template, example.inputs)
            if missing:
                errors.append(
                    {
                        "field": f"examples[{index}].inputs",
                        "message": "missing template variable(s) "
                        + ", ".join(missing),
                    }
                )
            size = template_shape(config.user_template).rendered_chars(
                example.inputs
            )
            if size > MAX_ITEM_TEXT_CHARS:
                errors.append(
                    {
                        "field": f"examples[{index}].inputs",
                        "message": f"userTemplate renders to {size} "
                        "characters with these inputs, over the limit of "
                        f"{MAX_ITEM_TEXT_CHARS}",
                    }
                )
            if (
                config.scorer.kind in NEEDS_EXPECTED
                and example.expected is None
            ):
                errors.append(
                    {
                        "field": f"examples[{index}].expected",
                        "message": f"the {config.scorer.kind} scorer needs "
                        "an expected output",
                    }
                )
            if len(errors) >= 20:
                break
        return errors

    async def promote(
        self, client_id: ObjectId, run_id: str, *, force: bool
    ) -> dict[str, Any]:
        """Save the run's best prompt as a new version of its prompt.

        The starting prompt the baseline came from gets the new version
        when it was a stored prompt; an inline one becomes a new prompt.

        Raises:
            Conflict: The run has not succeeded, or its best prompt is
                not significantly better and ``force`` is off.
        """
        run = await self.runs.get_run(client_id, run_id)
        result = run.get("result")
        if run["status"] != SUCCEEDED or not result:
            raise Conflict(
                f"run is {run['status']}; only a SUCCEEDED run is promoted"
            )
        if result["recommendation"] != "best" and not force:
            raise Conflict(
                "the best prompt is not significantly better than the "
                "baseline: " + result["message"] + " (force=true promotes "
                "it anyway)"
            )
        baseline_index = int(result["baselineId"].lstrip("c"))
        origin = run["workingPrompts"][baseline_index]
        fields = {"systemPrompt": result["bestPrompt"]}
        if "promptId" in origin:
            current = await self._prompts.get(client_id, origin["promptId"])
            fields = {
                "name": current["name"],
                "userTemplate": current.get("userTemplate"),
                "tags": current.get("tags") or [],
                **fields,
            }
            return await self._prompts.update(
                client_id, origin["promptId"], fields
            )
        name = run.get("name") or f"run {run['_id']}"
        return await self._prompts.create(
            client_id, {"name": f"{name} (optimized)", **fields}
        )
