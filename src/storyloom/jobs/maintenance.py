"""The periodic housekeeping jobs: retention of old events/jobs, and the daily cost roll-up."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.jobs.compaction import compact_deltas
from storyloom.jobs.context import Handler, JobContext
from storyloom.jobs.models import JobStatus
from storyloom.jobs.schedule import ensure_schedule
from storyloom.store.database import Database
from storyloom.store.schema import checkpoints, events, jobs, usage, usage_daily

__all__ = [
    "MaintenancePolicy",
    "cleanup",
    "compact_deltas",
    "housekeeping_handlers",
    "install_housekeeping",
    "record_usage",
    "rollup_costs",
]

_TERMINAL = [s.value for s in JobStatus.TERMINAL]


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenancePolicy:
    events_ttl_s: float = 7 * 86_400.0  # events and checkpoints of finished jobs
    jobs_ttl_s: float = 30 * 86_400.0  # the finished jobs themselves
    retention_every_s: float = 3600.0
    rollup_every_s: float = 900.0
    compact_after_s: float = 600.0  # a finished job's deltas become one event per step after this
    compact_every_s: float = 300.0


async def cleanup(
    db: Database, *, events_ttl_s: float, jobs_ttl_s: float, now: float | None = None
) -> dict[str, int]:
    """Drop events and checkpoints of jobs finished over `events_ttl_s` ago, and the jobs over `jobs_ttl_s`.

    Running and queued jobs are never touched, whatever their age.
    """
    now = time.time() if now is None else now
    old_done = sa.select(jobs.c.id).where(
        jobs.c.status.in_(_TERMINAL), jobs.c.finished_at < now - events_ttl_s
    )

    async def tx(conn: AsyncConnection) -> dict[str, int]:
        ev = await conn.execute(sa.delete(events).where(events.c.job_id.in_(old_done)))
        cp = await conn.execute(sa.delete(checkpoints).where(checkpoints.c.run_id.in_(old_done)))
        gone = await conn.execute(
            sa.delete(jobs).where(jobs.c.status.in_(_TERMINAL), jobs.c.finished_at < now - jobs_ttl_s)
        )
        return {"events": ev.rowcount or 0, "checkpoints": cp.rowcount or 0, "jobs": gone.rowcount or 0}

    return await db.transaction(tx)


async def record_usage(
    db: Database,
    *,
    tenant: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    calls: int = 1,
    cost_usd: float = 0.0,
    job_id: str | None = None,
    ts: float | None = None,
) -> None:
    stmt = sa.insert(usage).values(
        ts=time.time() if ts is None else ts,
        job_id=job_id,
        tenant=tenant,
        model=model,
        calls=calls,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
    )
    await db.execute(stmt)


async def rollup_costs(db: Database, *, days: int = 2, now: float | None = None) -> list[dict[str, Any]]:
    """Recompute the per-day totals (UTC) of the last `days` days from the usage rows; idempotent."""
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    out: list[dict[str, Any]] = []

    async def tx(conn: AsyncConnection) -> None:
        for back in range(days - 1, -1, -1):
            start = today - timedelta(days=back)
            t0, t1 = start.timestamp(), (start + timedelta(days=1)).timestamp()
            rows = await conn.execute(
                sa.select(
                    usage.c.tenant,
                    usage.c.model,
                    sa.func.sum(usage.c.calls),
                    sa.func.sum(usage.c.prompt_tokens),
                    sa.func.sum(usage.c.completion_tokens),
                    sa.func.sum(usage.c.cost_usd),
                )
                .where(usage.c.ts >= t0, usage.c.ts < t1)
                .group_by(usage.c.tenant, usage.c.model)
            )
            for tenant, model, calls, pt, ct, cost in rows.all():
                values = {
                    "day": start.strftime("%Y-%m-%d"),
                    "tenant": tenant,
                    "model": model,
                    "calls": int(calls or 0),
                    "prompt_tokens": int(pt or 0),
                    "completion_tokens": int(ct or 0),
                    "cost_usd": float(cost or 0.0),
                }
                ins = db.insert(usage_daily).values(**values)
                await conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=["day", "tenant", "model"],
                        set_={k: v for k, v in values.items() if k not in ("day", "tenant", "model")},
                    )
                )
                out.append(values)

    await db.transaction(tx)
    return out


def _policy(ctx: JobContext) -> MaintenancePolicy:
    policy = getattr(ctx.services, "maintenance", None)
    return policy if isinstance(policy, MaintenancePolicy) else MaintenancePolicy()


async def _retention(ctx: JobContext) -> dict[str, Any]:
    policy = _policy(ctx)
    return await cleanup(ctx.queue.db, events_ttl_s=policy.events_ttl_s, jobs_ttl_s=policy.jobs_ttl_s)


async def _compaction(ctx: JobContext) -> dict[str, Any]:
    return await compact_deltas(ctx.queue.db, older_than_s=_policy(ctx).compact_after_s)


async def _cost_rollup(ctx: JobContext) -> dict[str, Any]:
    return {"rows": len(await rollup_costs(ctx.queue.db))}


def housekeeping_handlers() -> dict[str, Handler]:
    """The engine's own job kinds (app names may not take them)."""
    return {"retention": _retention, "cost_rollup": _cost_rollup, "compact_deltas": _compaction}


async def install_housekeeping(db: Database, policy: MaintenancePolicy) -> None:
    await ensure_schedule(db, "retention", "retention", {}, interval_s=policy.retention_every_s)
    await ensure_schedule(db, "cost_rollup", "cost_rollup", {}, interval_s=policy.rollup_every_s)
    await ensure_schedule(db, "compact_deltas", "compact_deltas", {}, interval_s=policy.compact_every_s)
