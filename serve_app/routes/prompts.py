"""``/prompts``: a client's versioned prompts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from serve_app.deps import Context, CurrentClient
from serve_app.schemas.common import MAX_OFFSET, Cursor, error_responses
from serve_app.schemas.prompts import PromptList, PromptOut, PromptWrite

router = APIRouter(
    prefix="/prompts",
    tags=["prompts"],
    responses=error_responses(401, 429, 503),
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 413),
)
async def create_prompt(
    body: PromptWrite, context: Context, client: CurrentClient
) -> PromptOut:
    """Store a prompt as version 1."""
    document = await context.prompts.create(
        client.id, body.model_dump(by_alias=True)
    )
    return PromptOut.from_doc(document)


@router.get("", responses=error_responses(400))
async def list_prompts(
    context: Context,
    client: CurrentClient,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> PromptList:
    """The client's prompts (latest versions), newest first."""
    page = await context.prompts.list(client.id, limit=limit, cursor=cursor)
    return PromptList(
        items=[PromptOut.from_doc(d) for d in page.documents],
        next_cursor=page.next_cursor,
    )


@router.get("/{prompt_id}", responses=error_responses(404))
async def get_prompt(
    prompt_id: str, context: Context, client: CurrentClient
) -> PromptOut:
    """The latest version of a prompt."""
    return PromptOut.from_doc(await context.prompts.get(client.id, prompt_id))


@router.put("/{prompt_id}", responses=error_responses(400, 404, 409, 413))
async def update_prompt(
    prompt_id: str,
    body: PromptWrite,
    context: Context,
    client: CurrentClient,
) -> PromptOut:
    """Store a new version; earlier versions stay readable."""
    document = await context.prompts.update(
        client.id, prompt_id, body.model_dump(by_alias=True)
    )
    return PromptOut.from_doc(document)


@router.delete(
    "/{prompt_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def delete_prompt(
    prompt_id: str, context: Context, client: CurrentClient
) -> Response:
    """Soft-delete a prompt."""
    await context.prompts.delete(client.id, prompt_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{prompt_id}/versions/{version}", responses=error_responses(400, 404)
)
async def get_prompt_version(
    prompt_id: str,
    version: Annotated[int, Path(ge=1, le=MAX_OFFSET)],
    context: Context,
    client: CurrentClient,
) -> PromptOut:
    """One version of a prompt."""
    document = await context.prompts.get_version(client.id, prompt_id, version)
    return PromptOut.from_doc(document)
