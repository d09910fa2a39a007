"""Periodic jobs, retention and the cost roll-up (both databases)."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from storyloom.jobs import JobQueue
from storyloom.jobs.maintenance import cleanup, record_usage, rollup_costs
from storyloom.jobs.schedule import ensure_schedule, tick
from storyloom.store import Database
from storyloom.store.schema import jobs, usage_daily


async def test_racing_schedulers_enqueue_each_tick_once(db: Database, queue: JobQueue) -> None:
    t0 = 1_000_000.0
    await ensure_schedule(db, "retention", "retention", {"x": 1}, interval_s=60, first_run_at=t0)
    await ensure_schedule(db, "retention", "retention", {"x": 1}, interval_s=60)  # keeps next_run_at
    first = await asyncio.gather(*(tick(queue, now=t0 + 1) for _ in range(6)))
    assert len({j.id for batch in first for j in batch}) == 1
    assert await tick(queue, now=t0 + 30) == []  # not due again until t0 + 60
    second = await tick(queue, now=t0 + 61)
    assert len(second) == 1 and second[0].id != first[0][0].id
    # after a long outage the missed ticks collapse into one
    third = await tick(queue, now=t0 + 10_000)
    assert len(third) == 1 and await tick(queue, now=t0 + 10_001) == []
    assert (await queue.stats()).queued == 3


async def test_cleanup_removes_only_old_finished_jobs(db: Database, queue: JobQueue) -> None:
    old = await queue.submit("k", {})
    fresh = await queue.submit("k", {})
    waiting = await queue.submit("k", {})
    await queue.claim("w", limit=2, lease_s=10)
    await queue.complete(old.id, "w", {})
    await queue.complete(fresh.id, "w", {})
    now = time.time()
    async with db.write() as conn:
        await conn.execute(sa.update(jobs).where(jobs.c.id == old.id).values(finished_at=now - 10_000))
    gone = await cleanup(db, events_ttl_s=3600, jobs_ttl_s=7200, now=now)
    assert gone["jobs"] == 1 and gone["events"] == 2  # old: submitted + completed
    assert {e.kind for e in await queue.events(fresh.id)} == {"job.submitted", "job.completed"}
    assert (await queue.get(waiting.id)).status.value == "pending"


async def test_rollup_sums_usage_per_day_idempotently(db: Database) -> None:
    now = 1_700_000_000.0  # 2023-11-14 22:13 UTC
    await record_usage(db, tenant="a", model="m", prompt_tokens=10, completion_tokens=5, cost_usd=0.1, ts=now)
    await record_usage(
        db, tenant="a", model="m", prompt_tokens=1, completion_tokens=2, cost_usd=0.2, ts=now - 60
    )
    await record_usage(db, tenant="a", model="m", prompt_tokens=100, completion_tokens=0, ts=now - 86_400)
    await rollup_costs(db, now=now)
    await rollup_costs(db, now=now)  # idempotent
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(usage_daily).order_by(usage_daily.c.day))).all()
    assert [(r.day, r.calls, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        ("2023-11-13", 1, 100, 0),
        ("2023-11-14", 2, 11, 7),
    ]
    assert abs(rows[1].cost_usd - 0.3) < 1e-9
