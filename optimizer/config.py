"""A run's configuration: models, scorer, split, budget and seed.

Validated once (the API and the CLI both build it) and stored with the
run, so a resumed run searches exactly as it began. JSON is camelCase.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

ScorerKind = Literal[
    "exact",
    "normalized",
    "contains",
    "regex",
    "json_field",
    "numeric",
    "llm_judge",
    "python",
]


class _Config(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
    )


class ScorerConfig(_Config):
    """Which scorer, and its parameters.

    ``python`` names a callable handed to the Python driver API; it
    cannot be used over HTTP (the API rejects it).
    """

    kind: ScorerKind = "exact"
    #: ``regex``: the pattern the output must match (search).
    pattern: str | None = None
    #: ``json_field``: dotted path of the field compared in both.
    field: str | None = None
    #: ``numeric``: largest absolute difference still counted right.
    tolerance: float = Field(0.0, ge=0)
    #: ``exact``/``contains``: compare case-sensitively.
    case_sensitive: bool = True
    #: ``llm_judge``: the catalog model that grades.
    judge_model: str | None = None
    #: ``llm_judge``: grading instructions (an example's rubric wins).
    rubric: str | None = None

    @model_validator(mode="after")
    def _parameters(self) -> ScorerConfig:
        if self.kind == "regex" and not self.pattern:
            raise ValueError("scorer.pattern is required for regex")
        if self.kind == "json_field" and not self.field:
            raise ValueError("scorer.field is required for json_field")
        if self.kind == "llm_judge" and not self.judge_model:
            raise ValueError("scorer.judgeModel is required for llm_judge")
        return self


class SplitConfig(_Config):
    """How the dataset divides into train (minibatches) and validation.

    The split is drawn with the run's seed; ``validationSize`` wins over
    ``validationFraction`` when given.
    """

    validation_fraction: float = Field(0.5, gt=0, lt=1)
    validation_size: int | None = Field(None, ge=1)


class BudgetConfig(_Config):
    """When the search stops (whichever comes first).

    ``maxCalls`` counts model calls asked for (target, meta and judge),
    also those answered from the run's own store of answers, so a
    resumed run spends its budget exactly as the original; retries of a
    call are the pipeline's and not counted. ``maxWallSeconds`` counts
    from the latest (re)start of the run's driver.
    """

    iterations: int = Field(8, ge=0, le=1000)
    candidates_per_iteration: int = Field(4, ge=1, le=32)
    max_calls: int | None = Field(None, ge=1)
    max_cost: float | None = Field(None, gt=0, description="USD")
    max_wall_seconds: float | None = Field(None, gt=0)
    #: Iterations in a row without a better validated candidate.
    patience: int = Field(3, ge=1)


class RunConfig(_Config):
    """Everything that decides a run, except its prompts and data."""

    target_model: str = Field(min_length=1)
    meta_model: str = Field(min_length=1)
    #: The user message of each example (``{{variable}}`` placeholders).
    user_template: str = "{{input}}"
    temperature: float | None = Field(0.0, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    scorer: ScorerConfig = ScorerConfig()
    split: SplitConfig = SplitConfig()
    budget: BudgetConfig = BudgetConfig()
    #: Training examples a candidate is screened on.
    minibatch_size: int = Field(8, ge=1, le=500)
    #: Failures shown to the meta model per parent.
    failures_shown: int = Field(4, ge=0, le=50)
    seed: int = 0
