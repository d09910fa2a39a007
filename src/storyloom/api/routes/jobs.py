"""/api/jobs: look at, cancel and follow any job."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from storyloom.api.deps import NOT_FOUND, SSE_OK, After, ServicesDep, bind_job_id
from storyloom.api.presenters import job_out
from storyloom.api.schemas import JobOut
from storyloom.api.streams import job_events_response
from storyloom.errors import JobNotFoundError

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
    response_class=StreamingResponse,
    responses={**SSE_OK, **NOT_FOUND},
)
async def job_events(job_id: str, services: ServicesDep, after: After) -> StreamingResponse:
    """SSE: every event with `id:` = its offset; resume with Last-Event-ID (or ?after=)."""
    job, subscription = await services.hub.open(job_id, after)
    if job is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    return job_events_response(services, job, after, subscription=subscription)
