"""``/admin/jobs``: admin actions on any client's jobs."""

from __future__ import annotations

from fastapi import APIRouter, status

from pipeline.jobs.shapes import job_summary
from serve_app.deps import AdminKey, Context
from serve_app.schemas.common import error_responses
from serve_app.schemas.jobs import RequeueOut

router = APIRouter(
    prefix="/admin/jobs",
    tags=["admin: jobs"],
    responses=error_responses(401, 503),
)


@router.post(
    "/{job_id}/requeue",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409),
)
async def requeue_job(
    job_id: str, context: Context, admin: AdminKey
) -> RequeueOut:
    """Put a job's FAILED items back to PENDING (the workers do it)."""
    before = await context.jobs.get(None, job_id)
    job = await context.jobs.requeue(job_id)
    context.workers.notify_job(job["providers"], job_summary(job))
    return RequeueOut(
        id=job_id,
        failed_items=before["counts"].get("FAILED", 0),
        requeues=job["requeues"],
    )
