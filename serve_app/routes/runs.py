"""``/runs``: metaprompt optimization runs, driven inside the cluster."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from optimizer.config import RunConfig
from optimizer.records import Candidate
from optimizer.report import render_html, summarize
from pipeline.errors import Conflict, ValidationFailed
from serve_app.deps import Context, CurrentClient
from serve_app.errors import field_path
from serve_app.schemas.common import Cursor, error_responses
from serve_app.schemas.prompts import PromptOut
from serve_app.schemas.runs import PromoteIn, RunIn, RunList, RunOut

router = APIRouter(
    prefix="/runs",
    tags=["optimization"],
    responses=error_responses(401, 429, 503),
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 404, 413),
)
async def create_run(
    body: RunIn, context: Context, client: CurrentClient
) -> RunOut:
    """Store a run; the cluster's optimizer starts it at once."""
    try:
        config = RunConfig.model_validate(body.config_fields())
    except ValidationError as error:
        raise ValidationFailed(
            "invalid run configuration",
            [
                {"field": field_path(e["loc"]), "message": e["msg"]}
                for e in error.errors()
            ],
        ) from None
    document = await context.runs.create(
        client.id,
        name=body.name,
        config=config,
        working_prompts=body.starting_prompts(),
        dataset_id=body.dataset_id,
        examples=(
            None
            if body.examples is None
            else [e.model_dump(exclude_none=True) for e in body.examples]
        ),
        budget=client.quotas.budget,
    )
    return RunOut.from_doc(document)


@router.get("", responses=error_responses(400))
async def list_runs(
    context: Context,
    client: CurrentClient,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> RunList:
    """The client's runs, newest first (without candidates)."""
    page = await context.runs.runs.list_runs(
        client.id, limit=limit, cursor=cursor
    )
    return RunList(
        items=[RunOut.from_doc(d, detail=False) for d in page.documents],
        next_cursor=page.next_cursor,
    )


@router.get("/{run_id}", responses=error_responses(404))
async def get_run(
    run_id: str, context: Context, client: CurrentClient
) -> RunOut:
    """Status, progress, every candidate with its lineage, the result."""
    return RunOut.from_doc(await context.runs.runs.get_run(client.id, run_id))


@router.get(
    "/{run_id}/report",
    response_class=HTMLResponse,
    # All of them (the router's too): this route's errors are JSON.
    responses=error_responses(401, 404, 409, 429, 503, by_reference=True),
)
async def run_report(
    run_id: str, context: Context, client: CurrentClient
) -> HTMLResponse:
    """The run's report: one self-contained HTML page."""
    run = await context.runs.runs.get_run(client.id, run_id)
    state = run.get("state")
    if not state or not state.get("baselineId"):
        raise Conflict("the run has no evaluated prompt yet")
    candidates = [Candidate.from_doc(c) for c in state["candidates"]]
    summary = run.get("result") or summarize(
        candidates, state["baselineId"], seed=run["config"]["seed"]
    )
    page = render_html(
        run.get("name") or f"Run {run_id}",
        summary,
        candidates,
        state.get("history") or [],
        (run.get("progress") or {}),
    )
    return HTMLResponse(page)


@router.post("/{run_id}/cancel", responses=error_responses(404, 409))
async def cancel_run(
    run_id: str, context: Context, client: CurrentClient
) -> RunOut:
    """Cancel a queued run, or stop a running one before its next iteration."""
    document = await context.runs.runs.request_cancel(
        client.id, run_id, actor=f"client:{client.id}"
    )
    return RunOut.from_doc(document)


@router.post(
    "/{run_id}/promote", responses=error_responses(400, 404, 409, 413)
)
async def promote_run(
    run_id: str,
    context: Context,
    client: CurrentClient,
    body: PromoteIn | None = None,
) -> PromptOut:
    """Save the best prompt as a new version of its starting prompt."""
    force = body.force if body is not None else False
    document = await context.runs.promote(client.id, run_id, force=force)
    return PromptOut.from_doc(document)
