"""/api/jobs: look at, cancel and follow a job of the caller's tenant (any tenant's, read-only, for an
admin key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from storyloom.api.deps import (
    AUTH,
    NOT_FOUND,
    SSE_OK,
    TOO_MANY,
    After,
    PrincipalDep,
    ServicesDep,
    bind_job_id,
)
from storyloom.api.presenters import job_out
from storyloom.api.schemas import JobOut
from storyloom.api.streams import ReleasingResponse, job_events_response
from storyloom.errors import JobNotFoundError

__all__ = ["router"]

router = APIRouter(prefix="/api/jobs", tags=["jobs"], dependencies=[Depends(bind_job_id)], responses=AUTH)


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def get_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> JobOut:
    return job_out(await services.queue.get(job_id, tenant=principal.read_scope))


@router.delete("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def cancel_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> JobOut:
    """Cancel: a queued job at once, a running one within its worker's next heartbeat."""
    return job_out(await services.queue.cancel(job_id, tenant=principal.tenant))


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={**SSE_OK, **NOT_FOUND, **TOO_MANY},
)
async def job_events(job_id: str, services: ServicesDep, principal: PrincipalDep, after: After) -> Response:
    """SSE: every event with `id:` = its offset; resume with Last-Event-ID (or ?after=)."""
    job, subscription = await services.hub.open(job_id, after)
    scope = principal.read_scope
    if job is None or (scope is not None and job.tenant != scope):
        subscription.close()
        raise JobNotFoundError(f"no job {job_id!r}")
    try:
        release = services.open_stream(principal.tenant)
    except BaseException:
        subscription.close()
        raise
    return ReleasingResponse(job_events_response(services, job, after, subscription=subscription), release)
