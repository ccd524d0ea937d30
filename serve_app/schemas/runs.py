"""Bodies of the optimization run and dataset endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from optimizer.config import BudgetConfig, ScorerConfig, SplitConfig
from serve_app.schemas.common import ApiModel, RequestModel, metadata_times
from serve_app.schemas.prompts import MAX_PROMPT_CHARS

Scalar = str | int | float | bool

#: An input's name: a template variable, as ``{{name}}`` spells it (a
#: stored example's keys; MongoDB refuses some others, like a NUL byte).
VariableName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]


class ExampleIn(RequestModel):
    """One example: template variables and what a good answer is."""

    id: str | None = Field(None, max_length=256)
    inputs: dict[VariableName, Scalar] = Field(
        min_length=1,
        # Pydantic lists the pattern only: no other key is allowed.
        json_schema_extra={"additionalProperties": False},
    )
    expected: str | int | float | bool | None = None
    rubric: str | None = Field(None, max_length=20_000)


class DatasetIn(RequestModel):
    """``POST /datasets`` as JSON (JSON lines: one example per line)."""

    name: str | None = Field(None, max_length=200)
    examples: list[ExampleIn]


class DatasetOut(ApiModel):
    """A stored dataset (its examples are not echoed)."""

    id: str
    name: str | None
    size: int
    created_at: datetime

    @classmethod
    def from_doc(cls, document: dict[str, Any]) -> DatasetOut:
        """Build from a stored dataset."""
        return cls(
            id=str(document["_id"]),
            name=document.get("name"),
            size=document["size"],
            created_at=metadata_times(document)["created_at"],
        )


class DatasetList(ApiModel):
    """A page of datasets; pass ``nextCursor`` as ``cursor``."""

    items: list[DatasetOut]
    next_cursor: str | None


class WorkingPromptIn(RequestModel):
    """A starting prompt: a stored prompt (and version) or inline text."""

    prompt_id: str | None = None
    prompt_version: int | None = Field(None, ge=1)
    text: str | None = Field(None, min_length=1, max_length=MAX_PROMPT_CHARS)

    @model_validator(mode="after")
    def _one_form(self) -> WorkingPromptIn:
        if (self.prompt_id is None) == (self.text is None):
            raise ValueError("give promptId (and promptVersion) or text")
        if self.prompt_version is not None and self.prompt_id is None:
            raise ValueError("promptVersion needs promptId")
        return self


class RunIn(RequestModel):
    """``POST /runs``: what to optimize, on what data, within what budget.

    ``prompts`` is the deprecated name of ``workingPrompts``, still
    accepted.
    """

    name: str | None = Field(None, max_length=200)
    working_prompts: list[WorkingPromptIn] | None = Field(
        None, min_length=1, max_length=16
    )
    prompts: list[WorkingPromptIn] | None = Field(
        None,
        min_length=1,
        max_length=16,
        deprecated=True,
        description="Deprecated: use workingPrompts.",
    )
    dataset_id: str | None = None
    examples: list[ExampleIn] | None = None
    target_model: str = Field(min_length=1, max_length=100)
    meta_model: str = Field(min_length=1, max_length=100)
    user_template: str = Field("{{input}}", max_length=MAX_PROMPT_CHARS)
    temperature: float | None = Field(0.0, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=100_000)
    scorer: ScorerConfig = ScorerConfig()
    split: SplitConfig = SplitConfig()
    budget: BudgetConfig = BudgetConfig()
    minibatch_size: int = Field(8, ge=1, le=500)
    failures_shown: int = Field(4, ge=0, le=50)
    seed: int = 0

    @model_validator(mode="after")
    def _prompts(self) -> RunIn:
        if self.working_prompts is None and self.prompts is None:
            raise ValueError("workingPrompts is required")
        if self.working_prompts is not None and self.prompts is not None:
            raise ValueError("give workingPrompts or prompts, not both")
        return self

    def starting_prompts(self) -> list[dict[str, Any]]:
        """The starting prompts, from whichever field was given."""
        chosen = self.working_prompts or self.prompts or []
        return [p.model_dump(by_alias=True, exclude_none=True) for p in chosen]

    def config_fields(self) -> dict[str, Any]:
        """The fields that make the run's configuration."""
        return self.model_dump(
            by_alias=True,
            exclude={
                "name",
                "working_prompts",
                "prompts",
                "dataset_id",
                "examples",
            },
        )


class RunOut(ApiModel):
    """A run: its status, progress, candidates and result."""

    id: str
    name: str | None
    status: str
    config: dict[str, Any]
    working_prompts: list[dict[str, Any]]
    dataset_id: str
    dataset_size: int
    validation_size: int
    progress: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] | None = None
    history: list[dict[str, Any]] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_doc(
        cls, document: dict[str, Any], *, detail: bool = True
    ) -> RunOut:
        """Build from a stored run (``detail``: with its candidates)."""
        state = document.get("state") or {}
        candidates = None
        history = None
        if detail and state:
            candidates = [
                {key: value for key, value in c.items() if key != "validation"}
                for c in state.get("candidates", [])
            ]
            history = state.get("history")
        return cls(
            id=str(document["_id"]),
            name=document.get("name"),
            status=document["status"],
            config=document["config"],
            working_prompts=document["workingPrompts"],
            dataset_id=str(document["datasetId"]),
            dataset_size=document.get("datasetSize", 0),
            validation_size=document.get("validationSize", 0),
            progress=document.get("progress"),
            candidates=candidates,
            history=history,
            result=document.get("result"),
            error=document.get("error"),
            cancel_requested=bool(document.get("cancelRequested")),
            **metadata_times(document),
        )


class RunList(ApiModel):
    """A page of runs (without candidates).

    Pass ``nextCursor`` as ``cursor`` for the next page.
    """

    items: list[RunOut]
    next_cursor: str | None


class PromoteIn(RequestModel):
    """``POST /runs/{id}/promote``."""

    force: bool = False
