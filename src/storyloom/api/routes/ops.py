"""/api/me (who the caller is) and /api/ops/* (the operator's panel: workers, queue, jobs,
deployments, usage). The ops routes need an admin key when authentication is on: their figures
are every tenant's. With authentication off every caller is the operator (api/auth.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from storyloom.api import ops
from storyloom.api.deps import AUTH, NOT_FOUND, PrincipalDep, ServicesDep

__all__ = ["router"]

router = APIRouter(tags=["operations"], responses=AUTH)


class MeOut(BaseModel):
    tenant: str
    role: str = Field(description="admin or member")
    authenticated: bool = Field(description="false when the service runs without --auth (no key needed)")


class WorkerLoadOut(BaseModel):
    worker: str
    running_jobs: int
    lease_expires_in_s: float


class QueueDepthOut(BaseModel):
    priority: int
    queued: int
    due: int = Field(description="queued jobs whose run_at has come")
    oldest_due_age_s: float


class JobCountOut(BaseModel):
    kind: str
    app: str | None = Field(description="the app running this kind, None for the engine's own")
    status: str
    count: int


class OverviewOut(BaseModel):
    live_workers: int = Field(description="worker processes alive (the supervisor's count under serve)")
    workers: list[WorkerLoadOut] = Field(description="workers holding a lease, with their running jobs")
    queued: int
    running: int
    queue: list[QueueDepthOut] = Field(description="queued jobs by priority, 9 (first) to 0")
    jobs: list[JobCountOut]
    at: float


class DeploymentOut(BaseModel):
    name: str
    model: str
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    shared: bool = Field(
        description="false: no shared limits store (no limits configured), each worker keeps its own "
        "breaker and this process cannot see it"
    )
    breaker: str = Field(description="closed, open, half_open, or unknown (not shared)")
    in_flight: int | None
    opens: int | None = Field(description="times the breaker ever opened")


class LimitsOut(BaseModel):
    deployments: list[DeploymentOut]
    tenant_limits: dict[str, dict[str, int | None]] = Field(
        description="STORYLOOM_TENANT_LIMITS as parsed (`*` for everyone)"
    )


class UsageDayOut(BaseModel):
    day: str = Field(description="YYYY-MM-DD (UTC)")
    tenant: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@router.get("/api/me", response_model=MeOut)
async def me(principal: PrincipalDep) -> MeOut:
    """The caller's tenant and role: what the studio shows, and whether it offers the ops page."""
    return MeOut(
        tenant=principal.tenant, role=principal.role.value, authenticated=principal.key_id is not None
    )


@router.get("/api/ops/overview", response_model=OverviewOut)
async def overview(services: ServicesDep, principal: PrincipalDep) -> OverviewOut:
    """Workers and their load, queue depth by priority, jobs by kind (app) and state."""
    import time

    principal.require_admin("/api/ops/overview")
    stats = await services.queue.stats()
    registry = services.registry
    counts = []
    for c in await ops.job_counts(services.db):
        app = registry.app_of_kind(c.kind)
        counts.append(JobCountOut(kind=c.kind, app=app.name if app else None, status=c.status, count=c.count))
    return OverviewOut(
        live_workers=await services.live_workers(),
        workers=[WorkerLoadOut(**asdict(w)) for w in await ops.worker_loads(services.db)],
        queued=stats.queued,
        running=stats.running,
        queue=[QueueDepthOut(**asdict(q)) for q in await ops.queue_depths(services.db)],
        jobs=counts,
        at=time.time(),
    )


@router.get("/api/ops/limits", response_model=LimitsOut)
async def limits(services: ServicesDep, principal: PrincipalDep) -> LimitsOut:
    """Each model deployment's limits and breaker state, and the tenants' limits."""
    principal.require_admin("/api/ops/limits")
    views = await ops.deployment_views(services.settings)
    tenant_limits = {
        name: {field: getattr(lim, field) for field in ("max_jobs", "submissions_per_minute", "max_streams")}
        for name, lim in services.tenant_limits.root.items()
    }
    return LimitsOut(
        deployments=[DeploymentOut(**{k: v for k, v in asdict(d).items() if k != "extra"}) for d in views],
        tenant_limits=tenant_limits,
    )


@router.get("/api/ops/usage", response_model=list[UsageDayOut])
async def usage(
    services: ServicesDep,
    principal: PrincipalDep,
    days: Annotated[int, Query(ge=1, le=366, description="this many UTC days, today included")] = 7,
) -> list[UsageDayOut]:
    """Tokens and cost per tenant per UTC day, newest first."""
    principal.require_admin("/api/ops/usage")
    return [UsageDayOut(**asdict(u)) for u in await ops.usage_per_day(services.db, days=days)]


class StepUsageOut(BaseModel):
    step: str = Field(description="the step's path, e.g. versions/v2/plot")
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@router.get("/api/jobs/{job_id}/usage", response_model=list[StepUsageOut], responses=NOT_FOUND, tags=["jobs"])
async def job_step_usage(job_id: str, services: ServicesDep, principal: PrincipalDep) -> list[StepUsageOut]:
    """Tokens and cost of a job per step, from the calls that have ended so far (the job's own
    tenant's; any tenant's, read-only, for an admin key)."""
    await services.queue.get(job_id, tenant=principal.read_scope)  # 404 for another tenant's
    return [StepUsageOut(**asdict(u)) for u in await ops.step_usage(services.db, job_id)]
