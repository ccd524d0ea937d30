"""``/jobs``: submit, follow, page results, and steer a client's jobs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from pipeline.jobs.mode import job_mode
from pipeline.jobs.shapes import JobOptions, job_summary
from pipeline.states import Actor, Status
from serve_app.deps import Context, CurrentClient
from serve_app.schemas.common import MAX_OFFSET, Cursor, error_responses
from serve_app.schemas.jobs import (
    ItemOut,
    JobCreate,
    JobList,
    JobOut,
    ResultsPage,
)

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    responses=error_responses(401, 429, 503),
)

NDJSON = "application/x-ndjson"

#: The status changes: no such job, or not allowed from its status.
TRANSITION_ERRORS = error_responses(404, 409)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses={
        200: {
            "model": JobOut,
            "description": "The job an earlier request with the same "
            "idempotencyKey made (nothing new is stored).",
        },
        **error_responses(400, 409, 413),
    },
)
async def submit_job(
    body: JobCreate, context: Context, client: CurrentClient
) -> JSONResponse:
    """Submit a job; every item is validated before anything is stored.

    A repeated ``idempotencyKey`` returns the original job (200).
    """
    mode, deadline = job_mode(body.mode, body.deadline)
    job, created = await context.submitter.submit(
        client.id,
        client.quotas,
        [item.spec() for item in body.items],
        JobOptions(
            priority=body.priority,
            max_attempts=body.max_attempts,
            cache=body.cache,
            idempotency_key=body.idempotency_key,
            mode=mode,
            deadline=deadline,
            fallbacks=body.fallbacks,
        ),
    )
    if created:
        context.workers.notify_job(job["providers"], job_summary(job))
    return JSONResponse(
        JobOut.from_doc(job).model_dump(mode="json"),
        status_code=201 if created else 200,
    )


@router.get("", responses=error_responses(400, 404))
async def list_jobs(
    context: Context,
    client: CurrentClient,
    status_filter: Annotated[Status | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> JobList:
    """The client's jobs, newest first."""
    page = await context.jobs.list_jobs(
        client.id, status=status_filter, limit=limit, cursor=cursor
    )
    jobs = page.documents
    leased = await context.jobs.processing_counts([j["_id"] for j in jobs])
    return JobList(
        items=[JobOut.from_doc(j, leased[j["_id"]]) for j in jobs],
        next_cursor=page.next_cursor,
    )


@router.get("/{job_id}", responses=error_responses(404))
async def get_job(
    job_id: str, context: Context, client: CurrentClient
) -> JobOut:
    """A job: status, counts by status, progress, tokens, cost, timings."""
    return await _job_out(context, await context.jobs.get(client.id, job_id))


@router.get(
    "/{job_id}/results",
    response_model=ResultsPage,
    responses={
        200: {
            "description": "A page of items; with `Accept: "
            "application/x-ndjson` or `format=jsonl`, every item as one "
            "JSON line (an `ItemOut` each).",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **error_responses(400, 404),
    },
)
async def job_results(
    job_id: str,
    request: Request,
    context: Context,
    client: CurrentClient,
    cursor: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status_filter: Annotated[Status | None, Query(alias="status")] = None,
    format: Annotated[str | None, Query(pattern="^(json|jsonl)$")] = None,
) -> Response:
    """Items in submission order, while the job runs and after.

    Pages by ``cursor``; with ``Accept: application/x-ndjson`` (or
    ``format=jsonl``) streams every item as JSON lines instead.
    """
    job = await context.jobs.get(client.id, job_id)
    if format == "jsonl" or NDJSON in request.headers.get("accept", ""):
        return StreamingResponse(
            _json_lines(context, job, status_filter), media_type=NDJSON
        )
    items, next_cursor = await context.jobs.results_page(
        job, cursor, limit, status_filter
    )
    page = ResultsPage(
        items=[ItemOut.from_doc(i) for i in items],
        next_cursor=None if next_cursor is None else str(next_cursor),
    )
    return JSONResponse(page.model_dump(mode="json"))


async def _json_lines(
    context: Context, job: dict[str, object], status_filter: Status | None
) -> AsyncIterator[bytes]:
    async for item in context.jobs.stream_results(job, status_filter):
        line = ItemOut.from_doc(item).model_dump(mode="json")
        yield (json.dumps(line, ensure_ascii=False) + "\n").encode()


@router.post("/{job_id}/cancel", responses=TRANSITION_ERRORS)
async def cancel_job(
    job_id: str, context: Context, client: CurrentClient
) -> JobOut:
    """Cancel: pending items are canceled; running ones finish."""
    job = await context.jobs.transition(
        client.id, job_id, Status.CANCELED, Actor.CLIENT
    )
    context.workers.notify_job(job["providers"], job_summary(job))
    return await _job_out(context, job)


@router.post("/{job_id}/consume", responses=TRANSITION_ERRORS)
async def consume_job(
    job_id: str, context: Context, client: CurrentClient
) -> JobOut:
    """Mark a finished job's results as consumed."""
    job = await context.jobs.transition(
        client.id, job_id, Status.CONSUMED, Actor.CLIENT
    )
    return await _job_out(context, job)


@router.post("/{job_id}/error-consuming", responses=TRANSITION_ERRORS)
async def error_consuming_job(
    job_id: str, context: Context, client: CurrentClient
) -> JobOut:
    """Report that consuming a finished job's results failed."""
    job = await context.jobs.transition(
        client.id, job_id, Status.ERROR_CONSUMING, Actor.CLIENT
    )
    return await _job_out(context, job)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def delete_job(
    job_id: str, context: Context, client: CurrentClient
) -> Response:
    """Soft-delete a job; its pending items are canceled."""
    job = await context.jobs.delete(client.id, job_id)
    context.workers.notify_job(
        job["providers"], {**job_summary(job), "status": Status.CANCELED.value}
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _job_out(context: Context, job: dict[str, Any]) -> JobOut:
    """A job as returned, with its items under lease counted."""
    leased = await context.jobs.processing_counts([job["_id"]])
    return JobOut.from_doc(job, leased[job["_id"]])
