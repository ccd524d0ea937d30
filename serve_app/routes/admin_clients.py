"""``/admin/clients``: register, list, inspect, deactivate, rotate keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from serve_app.deps import AdminKey, Context
from serve_app.schemas.clients import (
    ClientCreate,
    ClientList,
    ClientOut,
    ClientWithKey,
)
from serve_app.schemas.common import Cursor, error_responses

router = APIRouter(
    prefix="/admin/clients",
    tags=["admin: clients"],
    responses=error_responses(401, 503),
)

Limit = Annotated[int, Query(ge=1, le=500)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 413),
)
async def create_client(
    body: ClientCreate, context: Context, admin: AdminKey
) -> ClientWithKey:
    """Register a client. The key is in this response only: keep it."""
    client, issued = await context.clients.create(
        body.name, body.quotas, actor=admin
    )
    out = ClientOut.from_client(client)
    return ClientWithKey(**out.model_dump(), api_key=issued.key)


@router.get("", responses=error_responses(400))
async def list_clients(
    context: Context,
    admin: AdminKey,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> ClientList:
    """Active clients, newest first; pass ``nextCursor`` as ``cursor``."""
    clients, next_cursor = await context.clients.list(
        limit=limit, cursor=cursor
    )
    return ClientList(
        items=[ClientOut.from_client(c) for c in clients],
        next_cursor=next_cursor,
    )


@router.get("/{client_id}", responses=error_responses(404))
async def get_client(
    client_id: str, context: Context, admin: AdminKey
) -> ClientOut:
    """One client (never its key)."""
    return ClientOut.from_client(await context.clients.get(client_id))


@router.delete(
    "/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def deactivate_client(
    client_id: str, context: Context, admin: AdminKey
) -> Response:
    """Deactivate a client (soft delete); its key stops working."""
    await context.clients.deactivate(client_id, actor=admin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{client_id}/rotate-key", responses=error_responses(404))
async def rotate_key(
    client_id: str, context: Context, admin: AdminKey
) -> ClientWithKey:
    """Issue a new key; the old one stops working at once."""
    client, issued = await context.clients.rotate_key(client_id, actor=admin)
    out = ClientOut.from_client(client)
    return ClientWithKey(**out.model_dump(), api_key=issued.key)
