"""What an operator's panel shows, read from the shared state every process writes.

Everything here comes from the database (jobs, usage) or the gateway's shared limits store (breaker
states), never from one process's memory, so any API process answers the same. The one exception
is said out loud: with no shared limits store (`memory://`, no limits configured), each worker
keeps its own breaker and this process cannot see it (`shared: false`, state `unknown`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from storyloom.config import Settings
from storyloom.jobs.models import JobStatus
from storyloom.store.database import Database
from storyloom.store.schema import jobs, usage, usage_daily

__all__ = [
    "DeploymentView",
    "JobCount",
    "QueueDepth",
    "StepUsage",
    "UsageDay",
    "WorkerLoad",
    "deployment_views",
    "job_counts",
    "queue_depths",
    "step_usage",
    "usage_per_day",
    "worker_loads",
]

_QUEUED = (JobStatus.PENDING.value, JobStatus.RETRYING.value)
_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    worker: str
    running_jobs: int
    lease_expires_in_s: float


@dataclass(frozen=True, slots=True)
class QueueDepth:
    priority: int
    queued: int
    due: int
    oldest_due_age_s: float


@dataclass(frozen=True, slots=True)
class JobCount:
    kind: str
    status: str
    count: int


@dataclass(frozen=True, slots=True)
class UsageDay:
    day: str
    tenant: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class DeploymentView:
    name: str
    model: str
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    shared: bool  # whether the breaker state below is the one every process shares
    breaker: str  # closed | open | half_open | unknown
    in_flight: int | None
    opens: int | None
    extra: dict[str, Any] = field(default_factory=dict)


async def worker_loads(db: Database) -> list[WorkerLoad]:
    """Workers holding a live lease, with how many jobs each runs. An idle worker holds none and
    leaves no trace in the database: the count of live processes is the health route's."""
    now = time.time()
    query = (
        sa.select(jobs.c.lease_owner, sa.func.count(), sa.func.min(jobs.c.lease_expires_at))
        .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at > now)
        .group_by(jobs.c.lease_owner)
        .order_by(jobs.c.lease_owner)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        WorkerLoad(worker=str(owner), running_jobs=int(n), lease_expires_in_s=round(float(exp) - now, 2))
        for owner, n, exp in rows
        if owner is not None
    ]


async def queue_depths(db: Database) -> list[QueueDepth]:
    """Queued jobs by priority, 9 (first) to 0, with how many are due and the oldest due one's wait."""
    now = time.time()
    due = sa.case((jobs.c.run_at <= now, 1), else_=0)
    query = (
        sa.select(
            jobs.c.priority,
            sa.func.count(),
            sa.func.sum(due),
            sa.func.min(sa.case((jobs.c.run_at <= now, jobs.c.run_at), else_=None)),
        )
        .where(jobs.c.status.in_(_QUEUED))
        .group_by(jobs.c.priority)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    found = {
        int(p): QueueDepth(int(p), int(n), int(d or 0), round(max(0.0, now - float(o)), 3) if o else 0.0)
        for p, n, d, o in rows
    }
    return [found.get(p, QueueDepth(p, 0, 0, 0.0)) for p in range(9, -1, -1)]


async def job_counts(db: Database, *, tenant: str | None = None) -> list[JobCount]:
    """Jobs by kind and status (`tenant` None: every tenant's)."""
    query = sa.select(jobs.c.kind, jobs.c.status, sa.func.count()).group_by(jobs.c.kind, jobs.c.status)
    if tenant is not None:
        query = query.where(jobs.c.tenant == tenant)
    async with db.read() as conn:
        rows = (await conn.execute(query.order_by(jobs.c.kind, jobs.c.status))).all()
    return [JobCount(kind=str(k), status=str(s), count=int(n)) for k, s, n in rows]


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


async def usage_per_day(db: Database, *, days: int, tenant: str | None = None) -> list[UsageDay]:
    """Tokens and cost per tenant per UTC day for the last `days` days, newest first: recent calls
    from the per-call rows, older ones from the daily roll-up retention leaves behind."""
    now = time.time()
    first_day = _day(now - (days - 1) * _DAY_S)
    start = time.mktime(time.strptime(first_day, "%Y-%m-%d")) - time.timezone  # that day's 00:00 UTC
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    raw = sa.select(
        usage.c.ts,
        usage.c.tenant,
        usage.c.calls,
        usage.c.prompt_tokens,
        usage.c.completion_tokens,
        usage.c.cost_usd,
    ).where(usage.c.ts >= start)
    rolled = sa.select(
        usage_daily.c.day,
        usage_daily.c.tenant,
        usage_daily.c.calls,
        usage_daily.c.prompt_tokens,
        usage_daily.c.completion_tokens,
        usage_daily.c.cost_usd,
    ).where(usage_daily.c.day >= first_day)
    if tenant is not None:
        raw = raw.where(usage.c.tenant == tenant)
        rolled = rolled.where(usage_daily.c.tenant == tenant)
    async with db.read() as conn:
        raw_rows = (await conn.execute(raw)).all()
        rolled_rows = (await conn.execute(rolled)).all()
    for ts, who, calls, pt, ct, cost in raw_rows:
        _add(totals[(_day(float(ts)), str(who))], calls, pt, ct, cost)
    for day, who, calls, pt, ct, cost in rolled_rows:
        _add(totals[(str(day), str(who))], calls, pt, ct, cost)
    out = [
        UsageDay(
            day=d,
            tenant=t,
            calls=int(v[0]),
            prompt_tokens=int(v[1]),
            completion_tokens=int(v[2]),
            cost_usd=round(float(v[3]), 8),
        )
        for (d, t), v in totals.items()
    ]
    return sorted(out, key=lambda u: (u.day, u.tenant), reverse=True)


def _add(acc: list[float], calls: Any, pt: Any, ct: Any, cost: Any) -> None:
    acc[0] += int(calls or 0)
    acc[1] += int(pt or 0)
    acc[2] += int(ct or 0)
    acc[3] += float(cost or 0.0)


# The API makes no model call: the gateway's configuration only needs some provider URL to load.
_NO_PROVIDER = "http://127.0.0.1:9/v1"


async def deployment_views(settings: Settings) -> list[DeploymentView]:
    """Each deployment's configured limits and, from the shared limits store, its breaker."""
    from storyloom.limits.base import LimitBackend
    from storyloom.limits.breaker import breaker_state
    from storyloom.limits.state import in_flight
    from storyloom.llm.deployments import load_gateway_config

    config = load_gateway_config(settings, sim_url=_NO_PROVIDER)
    names = [d.name for d in config.deployments]
    shared = not config.limits_url.startswith("memory:")
    states: dict[str, Any] = {}
    if shared:
        backend = LimitBackend.from_url(config.limits_url, config.breaker)
        try:
            states = await backend.snapshot(names)
        finally:
            await backend.aclose()
    now = time.time()
    views = []
    for d in config.deployments:
        state = states.get(d.name)
        views.append(
            DeploymentView(
                name=d.name,
                model=d.model,
                rpm=d.rpm,
                tpm=d.tpm,
                max_concurrency=d.max_concurrency,
                shared=shared,
                breaker=breaker_state(state, now) if state else "unknown",
                in_flight=in_flight(state, now) if state else None,
                opens=int(state["br"].get("opens", 0)) if state else None,
            )
        )
    return views


@dataclass(frozen=True, slots=True)
class StepUsage:
    step: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


async def step_usage(db: Database, job_id: str) -> list[StepUsage]:
    """A job's model calls summed per step path (every attempt's calls count), as they end: what
    a live view shows beside each agent while the job still runs."""
    query = (
        sa.select(
            usage.c.step,
            sa.func.sum(usage.c.calls),
            sa.func.sum(usage.c.prompt_tokens),
            sa.func.sum(usage.c.completion_tokens),
            sa.func.sum(usage.c.cost_usd),
        )
        .where(usage.c.job_id == job_id)
        .group_by(usage.c.step)
        .order_by(usage.c.step)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        StepUsage(str(s or ""), int(c or 0), int(p or 0), int(o or 0), round(float(cost or 0.0), 8))
        for s, c, p, o, cost in rows
    ]
