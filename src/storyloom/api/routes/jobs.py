"""/api/jobs: look at, cancel and follow any job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from storyloom.api.deps import NOT_FOUND, SSE_ENDED, SSE_OK, After, ServicesDep, bind_job_id
from storyloom.api.presenters import job_out
from storyloom.api.schemas import JobOut
from storyloom.api.streams import resume_job_events

__all__ = ["router"]

router = APIRouter(prefix="/api/jobs", tags=["jobs"], dependencies=[Depends(bind_job_id)])


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def get_job(job_id: str, services: ServicesDep) -> JobOut:
    return job_out(await services.queue.get(job_id))


@router.delete("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def cancel_job(job_id: str, services: ServicesDep) -> JobOut:
    """Cancel: a queued job at once, a running one within its worker's next heartbeat."""
    return job_out(await services.queue.cancel(job_id))


@router.get(
    "/{job_id}/events",
    response_class=Response,
    responses={**SSE_OK, **SSE_ENDED, **NOT_FOUND},
)
async def job_events(job_id: str, services: ServicesDep, after: After) -> Response:
    """SSE: every event with `id:` = its offset and `event:` = its kind; resume with Last-Event-ID
    (or ?after=). 204 once the job has ended and the client has its last event."""
    return await resume_job_events(services, job_id, after)
