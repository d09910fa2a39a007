"""The seed's contract (/api/novel/...), so existing clients keep working."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.responses import Response, StreamingResponse

from storyloom.api.deps import AUTH, NOT_FOUND, QUEUE_FULL, PrincipalDep, ServicesDep, Tenant, bind_job_id
from storyloom.api.presenters import execution_time
from storyloom.api.schemas import UsageOut
from storyloom.api.services import Services
from storyloom.api.sse import SSE_SUBMITTED, format_named
from storyloom.api.streams import ReleasingResponse, job_events_response
from storyloom.apps.novel.models import ChapterInput, ChapterRequest
from storyloom.apps.novel.routes.presenters import chapter_content
from storyloom.apps.novel.routes.schemas import GenerateRequest, GenerateResponse, TaskResult, TaskStatus
from storyloom.jobs.models import Job, JobStatus
from storyloom.jobs.usage import job_usage

__all__ = ["router"]

router = APIRouter(
    prefix="/api/novel",
    tags=["novel (seed contract)"],
    dependencies=[Depends(bind_job_id)],
    responses=AUTH,
)

IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


async def _submit(
    services: Services, body: GenerateRequest, key: str | None, tenant: str
) -> tuple[Job, bool]:
    defaults = services.settings
    request = ChapterRequest(
        input=body.novel_input,
        versions=body.versions or defaults.writer_chapter_version_count,
        max_parallel=body.max_parallel or defaults.writer_max_parallel_requests,
    )
    return await services.submit(
        "novel",
        {"input": ChapterInput.of(request).model_dump(mode="json")},
        priority=body.priority,
        idempotency_key=key or body.idempotency_key,
        tenant=tenant,
    )


@router.post("/generate", response_model=GenerateResponse, responses=QUEUE_FULL)
async def generate(
    body: GenerateRequest, services: ServicesDep, tenant: Tenant, idempotency_key: IdempotencyHeader = None
) -> GenerateResponse:
    """Queue a chapter; poll /status and /result, or follow /api/jobs/{task_id}/events."""
    job, created = await _submit(services, body, idempotency_key, tenant)
    message = (
        "task accepted; poll its status or follow its events" if created else "an earlier identical task"
    )
    return GenerateResponse(task_id=job.id, status=job.status.value, message=message)


@router.post(
    "/generate/stream",
    response_class=StreamingResponse,
    responses={**SSE_SUBMITTED, **QUEUE_FULL},
)
async def generate_stream(
    body: GenerateRequest, services: ServicesDep, tenant: Tenant, idempotency_key: IdempotencyHeader = None
) -> Response:
    """Queue a chapter and stream its events. The first message (no id) names the task; reconnect
    with GET /api/jobs/{task_id}/events and Last-Event-ID."""
    await services.count_streams(tenant)
    release = services.open_stream(tenant)  # before the job: a refused stream leaves no job behind
    try:
        job, _ = await _submit(services, body, idempotency_key, tenant)
    except BaseException:
        release()
        raise
    hello = format_named("task", {"kind": "task", "task_id": job.id, "status": job.status.value})
    stream = job_events_response(services, job, 0, preamble=hello, headers={"X-Task-Id": job.id})
    return ReleasingResponse(stream, release)


@router.get("/status/{task_id}", response_model=TaskStatus, responses=NOT_FOUND)
async def status(task_id: str, services: ServicesDep, principal: PrincipalDep) -> TaskStatus:
    job = await services.queue.get(task_id, tenant=principal.read_scope)
    return TaskStatus(
        task_id=job.id,
        status=job.status.value,
        priority=job.priority,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
    )


@router.get("/result/{task_id}", response_model=TaskResult, responses=NOT_FOUND)
async def result(task_id: str, services: ServicesDep, principal: PrincipalDep) -> TaskResult:
    job = await services.queue.get(task_id, tenant=principal.read_scope)
    totals = (await job_usage(services.db, [job.id]))[job.id].to_dict()
    spent = {"usage": UsageOut.model_validate(totals), "cost_usd": totals["cost_usd"]}
    if job.status is not JobStatus.COMPLETED:
        return TaskResult(task_id=job.id, status=job.status.value, error=job.error, **spent)
    return TaskResult(
        task_id=job.id,
        status=job.status.value,
        chapter_content=chapter_content(job.result),
        execution_time=execution_time(job),
        **spent,
    )
