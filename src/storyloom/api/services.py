"""What the routes share: database, queue, event hub, project store, options and metric snapshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from storyloom import tracing
from storyloom.api.auth import KeyAuthenticator
from storyloom.api.metrics import DURATION_BUCKETS_S, SUBMISSIONS, ServiceCollector, ServiceSnapshot
from storyloom.api.stream_gate import Admitted, StreamGate
from storyloom.api.tenant_limits import (
    BudgetCheck,
    BudgetGate,
    TenantLimitsConfig,
    parse_tenant_limits,
)
from storyloom.config import Settings
from storyloom.errors import QueueFullError, TenantLimitError
from storyloom.jobs.intake import TenantCaps
from storyloom.jobs.models import Job, JobStatus, QueueStats
from storyloom.jobs.queue import JobQueue
from storyloom.registry import AppRegistry
from storyloom.store.database import Database
from storyloom.store.keys import KeyStore
from storyloom.store.schema import jobs

if TYPE_CHECKING:
    from storyloom.api.shared_streams import SharedStreams

__all__ = ["ApiOptions", "JobTotals", "Services"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiOptions:
    """Knobs of the HTTP layer. `max_pending` None = no admission limit.

    `worker_count`: the supervisor's live worker count when it shares the process (`serve`); without
    it the API counts workers holding live leases, and calls the service degraded only when due
    jobs have waited `stall_s` with no worker holding any lease.

    `auth`: every route but the public ones needs an API key (see api/auth.py).
    """

    auth: bool = False
    max_body_bytes: int = 1_048_576
    heartbeat_s: float = 15.0
    max_pending: int | None = 10_000
    min_live_workers: int = 1  # /api/health is degraded below this many live workers
    stall_s: float = 30.0
    stats_ttl_s: float = 1.0  # queue figures for health/metrics are cached this long
    worker_count: Callable[[], Awaitable[int]] | None = None


@dataclass(frozen=True, slots=True)
class JobTotals:
    """Chapter-job figures from the job table (kept while retention keeps the rows)."""

    by_status: dict[str, int]
    completed: int
    failed: int
    avg_execution_s: float
    duration_buckets: list[int]
    duration_count: int
    duration_sum_s: float


class Services:
    """Built once per app in the lifespan; routes reach it through `request.app.state.services`."""

    def __init__(
        self,
        *,
        settings: Settings,
        options: ApiOptions,
        db: Database,
        queue: JobQueue,
        hub: Any,
        registry: AppRegistry | None = None,
        tenant_limits: TenantLimitsConfig | None = None,
        budget_check: BudgetCheck | None = None,
        shared_streams: SharedStreams | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.db = db
        self.queue = queue
        self.hub = hub
        self.registry = registry if registry is not None else AppRegistry()
        self._shared: dict[str, Any] = {}
        # None: authentication is off (the embedded loopback default); AuthMiddleware reads this.
        self.keys = KeyAuthenticator(KeyStore(db)) if options.auth else None
        self.tenant_limits = tenant_limits or parse_tenant_limits(settings.tenant_limits)
        # A tenant's max_streams across API nodes, when the limits store is shared (else None).
        self.shared_streams = shared_streams
        self.streams = StreamGate(
            max_streams=settings.sse_max_streams,
            tenant_limit=self._stream_limit,
            elsewhere=shared_streams.elsewhere if shared_streams is not None else None,
        )
        self.budgets = BudgetGate(budget_check) if budget_check is not None else None
        self.collector = ServiceCollector()
        self.service_registry = CollectorRegistry(auto_describe=False)
        self.service_registry.register(self.collector)
        _register_gateway_metrics()
        self._stats: tuple[float, QueueStats] | None = None
        # Set when the server begins to stop: open SSE streams end at once (clients resume elsewhere
        # with Last-Event-ID) instead of holding the shutdown for the graceful timeout.
        self.closing = asyncio.Event()

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """A per-process singleton an app's routes need (its store), made on first use."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    @classmethod
    async def open(
        cls,
        settings: Settings,
        options: ApiOptions,
        stack: AsyncExitStack,
        *,
        database: Database | None = None,
        queue: JobQueue | None = None,
        hub: Any = None,
        registry: AppRegistry | None = None,
        tenant_limits: TenantLimitsConfig | None = None,
        budget_check: BudgetCheck | None = None,
    ) -> Services:
        from storyloom.jobs.events import EventHub

        db = database
        if db is None:
            db = Database.from_url(settings.resolved_database_url())
            stack.push_async_callback(db.close)
            await db.migrate(registry.migrations() if registry is not None else ())
        if hub is None:
            hub = EventHub.from_url(db, settings.event_hub_url)
            await hub.start()
            stack.push_async_callback(hub.stop)
        if queue is None:
            queue = JobQueue(db, hub=hub, max_backlog=options.max_pending)
        tenant_limits = tenant_limits or parse_tenant_limits(settings.tenant_limits)
        shared_streams = _open_shared_streams(settings, tenant_limits)
        if shared_streams is not None:
            stack.push_async_callback(shared_streams.aclose)
        services = cls(
            settings=settings,
            options=options,
            db=db,
            queue=queue,
            hub=hub,
            registry=registry,
            tenant_limits=tenant_limits,
            budget_check=budget_check,
            shared_streams=shared_streams,
        )
        if services.keys is not None:
            stack.push_async_callback(services.keys.aclose)
        return services

    async def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        priority: int,
        idempotency_key: str | None,
        tenant: str,
        depends_on: str | None = None,
    ) -> tuple[Job, bool]:
        """Submit within the tenant's limits; returns the job and whether this call created it (False:
        an idempotent repeat, answered even when the tenant is over a limit now). `depends_on`: the
        job is not claimed before that job completes."""
        before = time.time()
        caps = self.tenant_limits.for_tenant(tenant).caps()
        try:
            if self.budgets is not None and (spent := await self.budgets.refusal(tenant)) is not None:
                if idempotency_key is None:
                    raise spent
                # Still through the queue: a repeat of an accepted job gets it (or its conflict).
                caps = replace(caps or TenantCaps(), refuse_new=spent)
            with tracing.submit_span(kind, tenant):
                job = await self.queue.submit(
                    kind,
                    payload,
                    priority=priority,
                    idempotency_key=idempotency_key,
                    tenant=tenant,
                    caps=caps,
                    depends_on=depends_on,
                    traceparent=tracing.current_traceparent(),
                )
        except QueueFullError:
            SUBMISSIONS.labels("rejected").inc()
            raise
        except TenantLimitError:
            SUBMISSIONS.labels("tenant_limited").inc()
            raise
        created = idempotency_key is None or job.created_at >= before - 0.001
        SUBMISSIONS.labels("accepted" if created else "duplicate").inc()
        return job, created

    async def count_streams(self, tenant: str) -> None:
        """Before a stream's admission: what the tenant holds on the other API nodes now (a read of
        the shared limits store; nothing to do without one, or for a tenant without a limit)."""
        if self.shared_streams is not None and self._stream_limit(tenant) is not None:
            await self.shared_streams.refresh(tenant)

    def open_stream(self, tenant: str) -> Callable[[], None]:
        """A slot among this process's open SSE streams (and the tenant's); call the result to free
        it. No slot: TenantLimitError, and no place in the queue (see `enter_stream`)."""
        return self._with_shared_lease(tenant, self.streams.enter(tenant, queue=False)).release

    def enter_stream(self, tenant: str, queue_token: str | None) -> Admitted:
        """A slot, or StreamQueuedError with the caller's place in the queue (api/stream_gate.py)."""
        return self._with_shared_lease(tenant, self.streams.enter(tenant, queue_token))

    def _with_shared_lease(self, tenant: str, admitted: Admitted) -> Admitted:
        """With a shared store, the stream also holds the tenant's lease there until it ends."""
        if self.shared_streams is None or self._stream_limit(tenant) is None:
            return admitted
        give_back, local = self.shared_streams.hold(tenant), admitted.release

        def release() -> None:
            local()
            give_back()

        return Admitted(release, waited_s=admitted.waited_s)

    def stream_recheck_s(self) -> float:
        """How often a queued stream looks for a free slot when no local change wakes it."""
        return 1.0 if self.shared_streams is not None else float("inf")

    def heartbeat_s(self) -> float:
        """The SSE heartbeat interval now: the configured one, stretched under load."""
        return self.streams.heartbeat_s(self.options.heartbeat_s)

    def _stream_limit(self, tenant: str) -> int | None:
        own = self.tenant_limits.for_tenant(tenant).max_streams
        return own if own is not None else self.settings.sse_max_streams_per_tenant

    async def queue_stats(self) -> QueueStats:
        now = time.monotonic()
        if self._stats is not None and now - self._stats[0] < self.options.stats_ttl_s:
            return self._stats[1]
        stats = await self.queue.stats()
        self._stats = (now, stats)
        return stats

    async def live_workers(self) -> int:
        if self.options.worker_count is not None:
            return await self.options.worker_count()
        from storyloom.api.workers import busy_workers

        return await busy_workers(self.db)

    async def job_totals(self) -> JobTotals:
        """Jobs of the apps' main kinds (the seed's "generations"): counts per status and the
        duration histogram; the engine's housekeeping and apps' auxiliary kinds are not counted."""
        chapter = jobs.c.kind.in_(self.registry.names or [""])
        duration = jobs.c.finished_at - jobs.c.created_at
        done = jobs.c.status == JobStatus.COMPLETED.value
        bucket_cols = [
            sa.func.sum(sa.case((sa.and_(done, duration <= bound), 1), else_=0))
            for bound in DURATION_BUCKETS_S
        ]
        exec_time = jobs.c.finished_at - sa.func.coalesce(jobs.c.started_at, jobs.c.created_at)
        aggregates = sa.select(
            sa.func.sum(sa.case((done, 1), else_=0)),
            sa.func.sum(sa.case((done, duration), else_=0.0)),
            sa.func.avg(sa.case((done, exec_time), else_=None)),
            *bucket_cols,
        ).where(chapter, jobs.c.finished_at.is_not(None))
        per_status = sa.select(jobs.c.status, sa.func.count()).where(chapter).group_by(jobs.c.status)
        async with self.db.read() as conn:
            row = (await conn.execute(aggregates)).one()
            by_status = {status.value: 0 for status in JobStatus}
            for status, count in await conn.execute(per_status):
                by_status[str(status)] = int(count)
        return JobTotals(
            by_status=by_status,
            completed=by_status[JobStatus.COMPLETED.value],
            failed=by_status[JobStatus.FAILED.value],
            avg_execution_s=float(row[2] or 0.0),
            duration_buckets=[int(v or 0) for v in row[3:]],
            duration_count=int(row[0] or 0),
            duration_sum_s=float(row[1] or 0.0),
        )

    async def refresh_snapshot(self) -> None:
        """Read the database figures the Prometheus collector exposes at this scrape."""
        totals = await self.job_totals()
        stats = await self.queue_stats()
        self.collector.snapshot = ServiceSnapshot(
            queue_size=stats.queued,
            active_workers=await self.live_workers(),
            jobs_by_status=totals.by_status,
            duration_buckets=totals.duration_buckets,
            duration_count=totals.duration_count,
            duration_sum_s=totals.duration_sum_s,
        )


def _open_shared_streams(settings: Settings, limits: TenantLimitsConfig) -> SharedStreams | None:
    """Share tenants' stream counts through the deployment's limits store: only when one is named
    (STORYLOOM_LIMITS_URL, or STORYLOOM_REDIS_URL: a multi-node deployment) and a tenant can
    have a stream limit; the single-node default keeps its streams' admission free of I/O."""
    url = settings.limits_url or settings.redis_url
    if url is None or url.startswith("memory:"):
        return None
    if settings.sse_max_streams_per_tenant is None and not any(
        t.max_streams is not None for t in limits.root.values()
    ):
        return None
    from storyloom.api.shared_streams import SharedStreams
    from storyloom.limits.base import LimitBackend

    return SharedStreams(LimitBackend.from_url(url))


def _register_gateway_metrics() -> None:
    """Expose the gateway's `storyloom_llm_*` families even before this process makes a model call."""
    try:
        from storyloom.llm.metrics import gateway_metrics
    except ImportError:  # pragma: no cover - the gateway is part of the package
        return
    gateway_metrics()
