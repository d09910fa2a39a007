"""/api/jobs: list, look at, cancel, retry and follow a job of the caller's tenant (any tenant's,
read-only, for an admin key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from storyloom.api.deps import (
    AUTH,
    NOT_FOUND,
    SSE_ENDED,
    After,
    PrincipalDep,
    Responses,
    ServicesDep,
    bind_job_id,
)
from storyloom.api.presenters import job_out
from storyloom.api.schemas import JobOut
from storyloom.api.services import Services
from storyloom.api.sse import SSE_OK_QUEUED
from storyloom.api.streams import resume_job_events
from storyloom.jobs.admin import list_jobs, retry_job
from storyloom.jobs.models import Job, JobStatus
from storyloom.jobs.usage import job_usage

__all__ = ["JobList", "router"]

router = APIRouter(prefix="/api/jobs", tags=["jobs"], dependencies=[Depends(bind_job_id)], responses=AUTH)


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


async def _view(services: Services, found: list[Job]) -> list[JobOut]:
    usage = await job_usage(services.db, [j.id for j in found])
    registry = services.registry
    out = []
    for job in found:
        app = registry.app_of_kind(job.kind)
        out.append(job_out(job, usage[job.id], app=app.name if app is not None else None))
    return out


@router.get("", response_model=JobList)
async def list_all(
    services: ServicesDep,
    principal: PrincipalDep,
    status: Annotated[list[JobStatus] | None, Query(description="only jobs in these states")] = None,
    kind: Annotated[list[str] | None, Query(description="only jobs of these kinds")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobList:
    """Newest first (this tenant's; every tenant's for an admin key); `?status=failed` lists the
    dead letters."""
    page = await list_jobs(
        services.queue,
        statuses=[s.value for s in status or ()],
        kinds=kind or (),
        tenant=principal.read_scope,
        limit=limit,
        offset=offset,
    )
    return JobList(jobs=await _view(services, page.jobs), total=page.total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def get_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> JobOut:
    return (await _view(services, [await services.queue.get(job_id, tenant=principal.read_scope)]))[0]


@router.delete("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def cancel_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> JobOut:
    """Cancel: a queued job at once, a running one within its worker's next heartbeat."""
    return (await _view(services, [await services.queue.cancel(job_id, tenant=principal.tenant)]))[0]


@router.post(
    "/{job_id}/retry",
    response_model=JobOut,
    responses={**NOT_FOUND, **AUTH, 409: {"description": "the job has not failed or been cancelled"}},
)
async def retry(job_id: str, services: ServicesDep, principal: PrincipalDep) -> JobOut:
    """Run a failed or cancelled job of this tenant again; its finished steps are not redone."""
    return (await _view(services, [await retry_job(services.queue, job_id, tenant=principal.tenant)]))[0]


_STREAM_QUEUED: Responses = {
    429: {
        "description": "no event stream slot free (this API process's, or the tenant's max_streams): "
        "the body's queue_token holds your place (queue_position, estimated_wait_s); come back with "
        "?queue_token= after Retry-After seconds. A client that accepts only text/event-stream gets "
        "a 200 stream instead, whose first `queued` events (with `retry:`) wait for the turn"
    }
}
QueueToken = Annotated[
    str | None,
    Query(max_length=64, description="the place in the stream queue a 429 gave you"),
]


def _accepts_only_sse(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()}
    return kinds == {"text/event-stream"}  # what a browser's EventSource sends


@router.get(
    "/{job_id}/events",
    response_class=Response,
    responses={**SSE_OK_QUEUED, **SSE_ENDED, **NOT_FOUND, **_STREAM_QUEUED},
)
async def job_events(
    job_id: str,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    after: After,
    queue_token: QueueToken = None,
) -> Response:
    """SSE: every event with `id:` = its offset and `event:` = its kind; resume with Last-Event-ID
    (or ?after=). 204 once the job has ended and the client has its last event. With every stream
    slot taken: a place in the queue (429 with a queue_token, or `queued` events first)."""
    return await resume_job_events(
        services,
        job_id,
        after,
        read_scope=principal.read_scope,
        tenant=principal.tenant,
        queue_token=queue_token,
        wait_in_stream=_accepts_only_sse(request),
    )
