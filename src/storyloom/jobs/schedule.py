"""Periodic jobs: a schedule table ticked by every worker, enqueuing each tick exactly once.

No lease is needed: a tick's job is submitted with the idempotency key `schedule:<name>:<tick>`
(the unique constraint makes racing schedulers agree on one job), and only then is `next_run_at`
moved on with a compare-and-set. A crash in between resubmits the same key, which returns the
same job: each tick is enqueued once, never twice, never lost.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from storyloom.jobs.models import Job
from storyloom.jobs.queue import JobQueue
from storyloom.store.database import Database
from storyloom.store.schema import schedules

__all__ = ["ensure_schedule", "tick"]


async def ensure_schedule(
    db: Database,
    name: str,
    kind: str,
    payload: dict[str, Any],
    *,
    interval_s: float,
    first_run_at: float | None = None,
) -> None:
    """Create the schedule if it does not exist (keeps an existing one's next run time)."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    stmt = (
        db.insert(schedules)
        .values(
            name=name,
            kind=kind,
            payload=payload,
            interval_s=interval_s,
            next_run_at=first_run_at if first_run_at is not None else time.time(),
        )
        .on_conflict_do_update(
            index_elements=["name"], set_={"kind": kind, "payload": payload, "interval_s": interval_s}
        )
    )
    await db.execute(stmt)


async def tick(queue: JobQueue, *, now: float | None = None, priority: int = 3) -> list[Job]:
    """Enqueue every due schedule's job once; return the jobs enqueued (or found) for this tick."""
    now = time.time() if now is None else now
    async with queue.db.read() as conn:
        due = (await conn.execute(sa.select(schedules).where(schedules.c.next_run_at <= now))).all()
    out: list[Job] = []
    for row in due:
        m = row._mapping
        slot = float(m["next_run_at"])
        job = await queue.submit(
            m["kind"],
            dict(m["payload"] or {}),
            priority=priority,
            idempotency_key=f"schedule:{m['name']}:{slot:.3f}",
            tenant="system",
            max_attempts=1,
        )
        # Skip ticks missed while nothing ran: the next slot is the first one after now.
        interval = float(m["interval_s"])
        missed = int((now - slot) // interval) + 1
        advance = (
            sa.update(schedules)
            .where(schedules.c.name == m["name"], schedules.c.next_run_at == slot)
            .values(next_run_at=slot + missed * interval, last_job_id=job.id)
        )
        await queue.db.execute(advance)
        out.append(job)
    return out
