"""/api/learning: the chat endpoint, the immediate path of any task kind, and a session's memory.

`POST /api/learning/tasks/{kind}?wait=2s` submits a job of `learning.<kind>` and answers 200 with
the finished job when it ends within `wait`, else 202 with the job to follow (seed 004's
immediate vs background split, decided by the clock rather than by the caller). `POST
/api/learning/chat` answers a learner's message inline (its own wait) and leaves memory
consolidation and analysis queued behind it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from storyloom.api.deps import AUTH, NOT_FOUND, QUEUE_FULL, ServicesDep, Tenant
from storyloom.api.errors import NotFoundError
from storyloom.api.presenters import job_out
from storyloom.api.schemas import JobOut
from storyloom.api.services import Services
from storyloom.apps.learning.models import ChatIn
from storyloom.apps.learning.store import LearningStore
from storyloom.errors import InputError
from storyloom.jobs.models import Job

__all__ = ["TASK_KINDS", "parse_wait", "router"]

router = APIRouter(prefix="/api/learning", tags=["learning"], responses=AUTH)

TASK_KINDS = ("consolidate", "analyze", "embed", "cost_stats", "cleanup", "export")
_WAIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")
_MAX_WAIT_S = 30.0
_TERMINAL = ("job.completed", "job.failed", "job.cancelled")


def parse_wait(value: str | None) -> float:
    """`2s`, `500ms`, `1.5` (seconds) -> seconds, at most 30."""
    if value is None or value == "":
        return 0.0
    m = _WAIT.match(value)
    if m is None:
        raise InputError(f"wait must look like 2s, 500ms or 1.5, got {value!r}.")
    seconds = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    if seconds > _MAX_WAIT_S:
        raise InputError(f"wait is at most {_MAX_WAIT_S:g}s, got {value!r}.")
    return seconds


async def _wait_for(services: Services, job: Job, wait_s: float) -> Job:
    """The job once it ended, or as it is when `wait_s` passed (the hub, not polling)."""
    if wait_s > 0 and not job.status.is_terminal:
        try:
            async with asyncio.timeout(wait_s), services.hub.subscribe(job.id, 0) as sub:
                async for event in sub:
                    if event.kind in _TERMINAL:
                        break
        except TimeoutError:
            pass
    return await services.queue.get(job.id, tenant=job.tenant)


class TaskIn(BaseModel):
    payload: dict[str, Any] = Field(default_factory=dict, description="the task kind's payload")
    priority: int = Field(default=5, ge=0, le=9)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=150)


KindPath = Annotated[str, Path(description="one of " + ", ".join(TASK_KINDS))]


@router.post(
    "/tasks/{kind}",
    response_model=JobOut,
    responses={
        202: {"model": JobOut, "description": "still running after `wait`"},
        **NOT_FOUND,
        **QUEUE_FULL,
    },
)
async def submit_task(
    kind: KindPath,
    body: TaskIn,
    services: ServicesDep,
    tenant: Tenant,
    wait: Annotated[str | None, Query(description="answer inline if done within this (2s, 500ms)")] = None,
) -> JSONResponse:
    if kind not in TASK_KINDS:
        raise NotFoundError(f"no learning task kind {kind!r} (kinds: {', '.join(TASK_KINDS)}).")
    wait_s = parse_wait(wait)
    key = f"learning.task:{body.idempotency_key}" if body.idempotency_key else None
    job, _ = await services.submit(
        f"learning.{kind}", dict(body.payload), priority=body.priority, idempotency_key=key, tenant=tenant
    )
    job = await _wait_for(services, job, wait_s)
    out = job_out(job, app="learning")
    return JSONResponse(out.model_dump(mode="json"), status_code=200 if job.status.is_terminal else 202)


class ChatOut(BaseModel):
    answer: str | None = Field(description="the tutor's answer (None when it did not finish in time)")
    job: JobOut
    background: dict[str, str] = Field(description="kind -> job id of the queued consolidation and analysis")


@router.post("/chat", response_model=ChatOut, responses={202: {"model": ChatOut}, **QUEUE_FULL})
async def chat(body: ChatIn, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    run_input = body.model_dump(mode="json", exclude={"wait_s"})
    job, _ = await services.submit(
        "learning", {"input": run_input}, priority=5, idempotency_key=None, tenant=tenant
    )
    job = await _wait_for(services, job, body.wait_s)
    envelope = job.result or {}
    result = envelope.get("result") or {}
    out = ChatOut(
        answer=envelope.get("text") if job.status.value == "completed" else None,
        job=job_out(job, app="learning"),
        background=dict(result.get("background") or {}),
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=200 if job.status.is_terminal else 202)


SessionPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


@router.get("/sessions/{session_id}", responses=NOT_FOUND)
async def session(session_id: SessionPath, services: ServicesDep, tenant: Tenant) -> dict[str, Any]:
    store: LearningStore = services.shared("learning.store", lambda: LearningStore(services.db))
    found = await store.session(tenant, session_id)
    if found is None:
        raise NotFoundError(f"no learning session {session_id!r}.")
    return found
