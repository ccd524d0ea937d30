"""``/datasets``: a client's example sets for optimization runs.

``POST /datasets`` takes JSON (``{name?, examples: [...]}``) or JSON
lines (``application/x-ndjson`` or ``application/jsonl``: one example
per line, ``?name=`` names it).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import ValidationError

from pipeline.errors import ValidationFailed
from serve_app.deps import Context, CurrentClient
from serve_app.errors import field_path
from serve_app.schemas.common import Cursor, error_responses
from serve_app.schemas.runs import (
    DatasetIn,
    DatasetList,
    DatasetOut,
    ExampleIn,
)

router = APIRouter(
    prefix="/datasets",
    tags=["optimization"],
    responses=error_responses(401, 429, 503),
)

JSON_LINES = ("application/x-ndjson", "application/jsonl")

_DATASET_IN_SCHEMA = DatasetIn.model_json_schema(
    ref_template="#/components/schemas/{model}"
)
_DATASET_IN_SCHEMA.pop("$defs", None)


def _problems(error: ValidationError, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(p for p in (prefix, field_path(e["loc"])) if p),
            "message": e["msg"],
        }
        for e in error.errors()
    ]


def _parse_lines(body: bytes) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for number, line in enumerate(body.decode().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            example = ExampleIn.model_validate(json.loads(line))
        except json.JSONDecodeError as error:
            errors.append({"field": where, "message": f"not JSON: {error}"})
        except ValidationError as error:
            errors.extend(_problems(error, where))
        else:
            examples.append(example.model_dump(exclude_none=True))
    if errors:
        raise ValidationFailed(f"{len(errors)} bad lines", errors[:50])
    return examples


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                # Inline: no route takes DatasetIn as a body parameter, so
                # FastAPI never lists it in the components (a reference
                # to it dangled). ExampleIn is there, through RunIn.
                "application/json": {"schema": _DATASET_IN_SCHEMA},
                "application/x-ndjson": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        }
    },
)
async def create_dataset(
    request: Request,
    context: Context,
    client: CurrentClient,
    name: Annotated[str | None, Query(max_length=200)] = None,
) -> DatasetOut:
    """Store a dataset of examples (JSON, or JSON lines)."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0]
    if content_type.strip() in JSON_LINES:
        examples = _parse_lines(body)
    else:
        try:
            parsed = DatasetIn.model_validate_json(body)
        except ValidationError as error:
            raise ValidationFailed(
                "invalid dataset", _problems(error, "")
            ) from None
        name = parsed.name or name
        examples = [e.model_dump(exclude_none=True) for e in parsed.examples]
    document = await context.runs.create_dataset(client.id, name, examples)
    return DatasetOut.from_doc(document)


@router.get("", responses=error_responses(400))
async def list_datasets(
    context: Context,
    client: CurrentClient,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> DatasetList:
    """The client's datasets, newest first."""
    page = await context.runs.runs.list_datasets(
        client.id, limit=limit, cursor=cursor
    )
    return DatasetList(
        items=[DatasetOut.from_doc(d) for d in page.documents],
        next_cursor=page.next_cursor,
    )


@router.get("/{dataset_id}", responses=error_responses(404))
async def get_dataset(
    dataset_id: str, context: Context, client: CurrentClient
) -> DatasetOut:
    """One dataset (size, not its examples)."""
    document = await context.runs.runs.get_dataset(
        client.id, dataset_id, examples=False
    )
    return DatasetOut.from_doc(document)
