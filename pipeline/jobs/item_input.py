"""A job item as clients write it: ``POST /jobs`` and offline batch lines.

One definition of the item's shape (camelCase, unknown fields refused,
a stored prompt with variables or inline text), shared by the API's
request body and the batch driver's line parser, so the two can never
accept different items.
"""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from pipeline.jobs.validation import MAX_ITEM_TEXT_CHARS, ItemSpec

__all__ = ["MAX_CUSTOM_ID_CHARS", "MAX_ITEM_TEXT_CHARS", "JobItemIn"]

#: Longest ``customId``.
MAX_CUSTOM_ID_CHARS = 256
#: Most variables one item may give.
MAX_VARIABLES = 1_000

Scalar = str | int | float | bool


#: Versions are counted from 1; the bound keeps a number the database
#: cannot store (past 64 bits) a 400 instead of a 500.
MAX_PROMPT_VERSION = 2**31 - 1


class JobItemIn(BaseModel):
    """One item: a stored prompt with variables, or inline text."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        str_strip_whitespace=False,
    )

    custom_id: str | None = Field(None, max_length=MAX_CUSTOM_ID_CHARS)
    model: str = Field(min_length=1, max_length=100)
    prompt_id: str | None = None
    prompt_version: int | None = Field(None, ge=1, le=MAX_PROMPT_VERSION)
    variables: dict[str, Scalar] | None = Field(None, max_length=MAX_VARIABLES)
    system_prompt: str | None = Field(None, max_length=MAX_ITEM_TEXT_CHARS)
    user_content: str | None = Field(None, max_length=MAX_ITEM_TEXT_CHARS)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)

    @field_validator("variables")
    @classmethod
    def _values_bounded(
        cls, variables: dict[str, Scalar] | None
    ) -> dict[str, Scalar] | None:
        # No value may be longer than the content it renders into.
        for name, value in (variables or {}).items():
            if isinstance(value, str) and len(value) > MAX_ITEM_TEXT_CHARS:
                raise ValueError(
                    f"{name} is {len(value)} characters long, over the "
                    f"limit of {MAX_ITEM_TEXT_CHARS}"
                )
        return variables

    @model_validator(mode="after")
    def _one_form(self) -> JobItemIn:
        if self.prompt_id is None:
            if self.user_content is None:
                raise ValueError(
                    "give promptId (with variables) or userContent"
                )
            if self.variables is not None or self.prompt_version is not None:
                raise ValueError("variables and promptVersion need promptId")
        elif self.system_prompt is not None:
            raise ValueError(
                "systemPrompt comes from the prompt: give one or the other"
            )
        return self

    def spec(self) -> ItemSpec:
        """The validated shape, for the pipeline."""
        return ItemSpec(
            model=self.model,
            custom_id=self.custom_id,
            prompt_id=self.prompt_id,
            prompt_version=self.prompt_version,
            variables=self.variables,
            system_prompt=self.system_prompt,
            user_content=self.user_content,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
