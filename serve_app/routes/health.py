"""``/health`` (liveness) and ``/ready`` (readiness) for anyone."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pipeline.errors import Unavailable
from serve_app.deps import Context
from serve_app.schemas.common import ApiModel

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class ReadyOut(ApiModel):
    """``/ready``: each check is ``ok`` or what is wrong."""

    status: str
    checks: dict[str, str]


@router.get(
    "/ready",
    response_model=None,
    responses={
        200: {"model": ReadyOut, "description": "Ready."},
        503: {"model": ReadyOut, "description": "Not ready (see checks)."},
    },
)
async def ready(context: Context) -> JSONResponse:
    """Whether requests can be served: the database and the workers."""
    checks: dict[str, str] = {}
    try:
        await context.store.ping()
        checks["database"] = "ok"
    except Unavailable as error:
        checks["database"] = error.message
    for name, check in context.readiness_checks.items():
        checks[name] = await check()
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )
