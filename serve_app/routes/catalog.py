"""``/models`` for clients and ``/admin/models`` to manage the catalog."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from pipeline.catalog import ModelSpec
from serve_app.deps import AdminKey, Context, CurrentClient
from serve_app.schemas.catalog import ModelList, ModelOut
from serve_app.schemas.common import error_responses

router = APIRouter()

CLIENT_ERRORS = error_responses(401, 429, 503)
ADMIN_ERRORS = error_responses(401, 503)


@router.get("/models", tags=["models"], responses=CLIENT_ERRORS)
async def list_models(context: Context, client: CurrentClient) -> ModelList:
    """Active models with provider and limits (no endpoints, no keys)."""
    documents = await context.catalog.list(active_only=True)
    return ModelList(
        items=[ModelOut.from_doc(d, admin=False) for d in documents]
    )


@router.get("/admin/models", tags=["admin: models"], responses=ADMIN_ERRORS)
async def admin_list_models(context: Context, admin: AdminKey) -> ModelList:
    """Every live model, active or not, with its full provider config."""
    documents = await context.catalog.list(active_only=False)
    return ModelList(
        items=[ModelOut.from_doc(d, admin=True) for d in documents]
    )


@router.post(
    "/admin/models",
    status_code=status.HTTP_201_CREATED,
    tags=["admin: models"],
    responses={**ADMIN_ERRORS, **error_responses(400, 409, 413)},
)
async def create_model(
    spec: ModelSpec, context: Context, admin: AdminKey
) -> ModelOut:
    """Add a model; its key goes in the workers' environment."""
    document = await context.catalog.create(spec, actor=admin)
    return ModelOut.from_doc(document, admin=True)


@router.put(
    "/admin/models/{name:path}",
    tags=["admin: models"],
    responses={**ADMIN_ERRORS, **error_responses(400, 404, 413)},
)
async def replace_model(
    name: str, spec: ModelSpec, context: Context, admin: AdminKey
) -> ModelOut:
    """Replace a model's provider, config, limits or pricing."""
    document = await context.catalog.replace(name, spec, actor=admin)
    return ModelOut.from_doc(document, admin=True)


@router.delete(
    "/admin/models/{name:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["admin: models"],
    responses={**ADMIN_ERRORS, **error_responses(404)},
)
async def delete_model(
    name: str, context: Context, admin: AdminKey
) -> Response:
    """Deactivate and soft-delete a model."""
    await context.catalog.delete(name, actor=admin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
