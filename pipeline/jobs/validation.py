"""All-or-nothing validation of a job's items.

Every item is checked before anything is written: models exist and are
active, ``maxTokens`` is within the model's limit, prompts and versions
exist and belong to the client, templates
get all their variables and render within the content limit (checked
before rendering), custom ids are unique. One bad item rejects the
whole job with a 400 that names every offending item and id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from pipeline.catalog import ModelCatalog, max_tokens_problem
from pipeline.errors import ValidationFailed
from pipeline.jobs.estimate import estimate_cost, model_pricing
from pipeline.prompts import PromptService
from pipeline.templates import render, template_shape

#: Longest system prompt or user content of an item, in characters; a
#: rendered template is user content too.
MAX_ITEM_TEXT_CHARS = 200_000

#: Problems listed one by one; beyond this, the summary fields still
#: name every bad model and prompt id.
MAX_LISTED_ERRORS = 100


@dataclass
class ItemSpec:
    """One submitted item, as the API validated its shape."""

    model: str
    custom_id: str | None = None
    prompt_id: str | None = None
    prompt_version: int | None = None
    variables: dict[str, Any] | None = None
    system_prompt: str | None = None
    user_content: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass
class ValidatedBatch:
    """What submission needs once validation passed.

    Attributes:
        fields: Per item, the stored request fields.
        models: Model names used.
        providers: Providers of those models.
        estimates: Per item, its estimated cost in USD
            (:mod:`pipeline.jobs.estimate`).
        fallbacks: Per model used, the fallbacks its catalog entry names.
    """

    fields: list[dict[str, Any]]
    models: list[str]
    providers: list[str]
    estimates: list[float] = field(default_factory=list)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Problems:
    errors: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    bad_models: set[str] = field(default_factory=set)
    bad_prompts: set[str] = field(default_factory=set)

    def add(self, index: int, name: str, message: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(
                {"field": f"items[{index}].{name}", "message": message}
            )

    def raise_if_any(self) -> None:
        if not self.count:
            return
        parts = []
        if self.bad_models:
            parts.append(
                "unknown models: " + ", ".join(sorted(self.bad_models))
            )
        if self.bad_prompts:
            parts.append(
                "unknown prompts: " + ", ".join(sorted(self.bad_prompts))
            )
        summary = (
            "; ".join(parts)
            or self.errors[0]["field"] + ": " + (self.errors[0]["message"])
        )
        error = ValidationFailed(
            f"{self.count} invalid item(s); nothing was stored. {summary}",
            self.errors,
        )
        error.details.update(
            invalidItems=self.count,
            unknownModels=sorted(self.bad_models),
            unknownPrompts=sorted(self.bad_prompts),
        )
        raise error


async def validate_items(
    client_id: ObjectId,
    items: list[ItemSpec],
    catalog: ModelCatalog,
    prompts: PromptService,
) -> ValidatedBatch:
    """Check every item and render the templated ones.

    Raises:
        ValidationFailed: Naming every offending item (nothing written).
    """
    problems = _Problems()
    models = await catalog.by_names({item.model for item in items})
    prompt_keys: set[tuple[ObjectId, int | None]] = set()
    for index, item in enumerate(items):
        if item.prompt_id is not None:
            if ObjectId.is_valid(item.prompt_id):
                prompt_keys.add(
                    (ObjectId(item.prompt_id), item.prompt_version)
                )
            else:
                problems.bad_prompts.add(item.prompt_id)
                problems.add(
                    index, "promptId", f"unknown prompt {item.prompt_id!r}"
                )
    found = (
        await prompts.versions_of(client_id, prompt_keys)
        if prompt_keys
        else {}
    )

    seen_ids: dict[str, int] = {}
    stored: list[dict[str, Any]] = []
    estimates: list[float] = []
    for index, item in enumerate(items):
        system_chars = len(item.system_prompt or "")
        if item.model not in models:
            problems.bad_models.add(item.model)
            problems.add(
                index, "model", f"unknown or inactive model {item.model!r}"
            )
        elif too_many := max_tokens_problem(
            models[item.model], item.max_tokens
        ):
            problems.add(index, "maxTokens", too_many)
        if item.custom_id is not None:
            first = seen_ids.setdefault(item.custom_id, index)
            if first != index:
                problems.add(
                    index, "customId", f"duplicate of items[{first}].customId"
                )
        fields: dict[str, Any] = {
            "customId": item.custom_id,
            "model": item.model,
            "temperature": item.temperature,
            "maxTokens": item.max_tokens,
        }
        if item.prompt_id is None:
            fields["systemPrompt"] = item.system_prompt
            fields["userContent"] = item.user_content
        elif ObjectId.is_valid(item.prompt_id):
            key = (ObjectId(item.prompt_id), item.prompt_version)
            prompt = found.get(key)
            if prompt is None:
                problems.bad_prompts.add(item.prompt_id)
                version = (
                    f" version {item.prompt_version}"
                    if item.prompt_version is not None
                    else ""
                )
                problems.add(
                    index,
                    "promptId",
                    f"unknown prompt {item.prompt_id!r}{version}",
                )
            else:
                fields["promptId"] = prompt["_id"]
                fields["promptVersion"] = prompt["version"]
                fields["userContent"] = _user_content(
                    index, item, prompt, problems
                )
                system_chars = len(prompt.get("systemPrompt") or "")
        stored.append(fields)
        if item.model in models:
            estimates.append(
                estimate_cost(
                    model_pricing(models[item.model]),
                    system_chars + len(fields.get("userContent") or ""),
                    item.max_tokens,
                )
            )
    problems.raise_if_any()
    used = {item.model for item in items}
    return ValidatedBatch(
        fields=stored,
        models=sorted(used),
        providers=sorted({models[name]["provider"] for name in used}),
        estimates=estimates,
        fallbacks={
            name: list(models[name].get("fallbacks") or [])
            for name in sorted(used)
            if models[name].get("fallbacks")
        },
    )


def _user_content(
    index: int, item: ItemSpec, prompt: dict[str, Any], problems: _Problems
) -> str | None:
    template = prompt.get("userTemplate")
    if not template:
        if item.user_content is None:
            problems.add(
                index,
                "userContent",
                "the prompt has no user template: give userContent",
            )
        return item.user_content
    if item.user_content is not None:
        problems.add(
            index,
            "userContent",
            "the prompt has a user template: give variables, not userContent",
        )
        return None
    variables = item.variables or {}
    shape = template_shape(template)
    missing = [name for name in shape.names if name not in variables]
    if missing:
        problems.add(index, "variables", "missing: " + ", ".join(missing))
        return None
    size = shape.rendered_chars(variables)
    if size > MAX_ITEM_TEXT_CHARS:
        problems.add(
            index,
            "variables",
            f"the prompt's userTemplate renders to {size} characters with "
            f"these variables, over the limit of {MAX_ITEM_TEXT_CHARS}",
        )
        return None
    return render(template, variables, max_chars=MAX_ITEM_TEXT_CHARS)
