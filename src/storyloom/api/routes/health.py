"""Health, the seed's JSON metrics, and Prometheus /metrics.

Health needs no key (load balancers and orchestrators probe it). Both metrics need an admin key
when authentication is on: they are figures of the whole deployment, every tenant's tokens and cost
among them (`storyloom_llm_tokens{tenant=...}`); a Prometheus scrape sends one with
`authorization: {credentials_file: ...}`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from storyloom.api.deps import AUTH, PrincipalDep, ServicesDep
from storyloom.api.metrics import CONTENT_TYPE_LATEST, render_metrics
from storyloom.api.schemas import HealthOut, MetricsOut
from storyloom.errors import StoreError

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/api/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(services: ServicesDep) -> JSONResponse:
    """200 when the database answers and workers are there to run jobs; 503 (degraded) otherwise."""
    reasons: list[str] = []
    workers = queue_size = 0
    database = "ok"
    try:
        stats = await services.queue.stats()
        queue_size = stats.queued
        workers = await services.live_workers()
    except (StoreError, OSError):  # a refused connection may surface as a raw OSError
        database = "unreachable"
        reasons.append("the database does not answer")
    if database == "ok":
        opts = services.options
        if opts.worker_count is not None and workers < opts.min_live_workers:
            reasons.append(f"{workers} live workers (need {opts.min_live_workers})")
        elif (
            opts.worker_count is None and workers == 0 and stats.due and stats.oldest_due_age_s > opts.stall_s
        ):
            reasons.append(f"jobs have waited {stats.oldest_due_age_s:.0f}s and no worker holds a lease")
    body = HealthOut(
        status="degraded" if reasons else "healthy",
        workers=workers,
        queue_size=queue_size,
        database="ok" if database == "ok" else "unreachable",
        reasons=reasons,
    )
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)


@router.get("/api/metrics", response_model=MetricsOut, responses=AUTH)
async def metrics_json(services: ServicesDep, principal: PrincipalDep) -> MetricsOut:
    """The seed's figures: finished executions, success rate, average time, workers, queue size."""
    principal.require_admin("/api/metrics")
    totals = await services.job_totals()
    stats = await services.queue_stats()
    finished = totals.completed + totals.failed
    return MetricsOut(
        total_executions=finished,
        success_rate=round(totals.completed / finished, 4) if finished else 0.0,
        avg_execution_time=round(totals.avg_execution_s, 3),
        active_workers=await services.live_workers(),
        queue_size=stats.queued,
    )


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def prometheus(services: ServicesDep, principal: PrincipalDep) -> Response:
    principal.require_admin("/metrics")
    await services.refresh_snapshot()
    return Response(render_metrics(services.service_registry), media_type=CONTENT_TYPE_LATEST)
