"""Reaping expired leases: a run lost to a dead worker is not the job's fault.

`attempts` bounds the job's *own* errors (`max_attempts`). A worker that dies (kill -9, OOM, a
lost machine) takes every job it had in flight with it; with ~20 jobs per worker and a few crashes
during a job's life, counting those as attempts dead-lettered healthy jobs. So a reaped job gets
its attempt back and `lease_losses + 1`, bounded apart by `max_lease_losses` (much higher).

A *poison* job (one that kills every worker it lands on) must not take down worker after worker
for 20 rounds, though. The reaper sees each death as the set of jobs the dead worker had in
flight; a job is poison when it was in flight at `poison_deaths` consecutive deaths of its
workers without finishing a step in between, and was the *only* job common to all of them. Under
random crashes of busy workers many jobs share each death, so healthy jobs are not caught; a job
alone on a worker that keeps dying without progress is. A poison job would drag the same
co-runners from death to death (they are reclaimed together), so once a job has lost two workers
in a row without progress it is queued again after a random delay of up to `spread_s`: suspects
land in different claims, the deaths they share shrink to the one job that causes them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.jobs.models import JobStatus
from storyloom.store.schema import checkpoints, jobs

__all__ = ["LeasePolicy", "reap_expired"]

_PEERS_KEPT = 64  # a death shared with more jobs than this cannot single one out: not kept


@dataclass(frozen=True, slots=True, kw_only=True)
class LeasePolicy:
    max_lease_losses: int = 20
    poison_deaths: int = 3
    spread_s: float = 2.0  # suspects (two progress-less deaths in a row) come back within this


@dataclass(frozen=True, slots=True)
class Reaped:
    job_id: str
    worker: str
    lease_losses: int
    dead_letter: str | None  # the error when the job is dead-lettered, else None


async def reap_expired(conn: AsyncConnection, now: float, policy: LeasePolicy) -> list[Reaped]:
    """Turn running jobs whose lease expired back into pending ones (or dead letters), in `conn`."""
    from storyloom.jobs.queue import _cascade, _finish, append_event  # the queue imports this module

    rows = (
        await conn.execute(
            sa.select(jobs.c.id, jobs.c.lease_owner, jobs.c.lease_losses, jobs.c.loss_trail, jobs.c.attempts)
            .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not rows:
        return []
    deaths: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        deaths[str(row.lease_owner)].add(row.id)
    steps: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(checkpoints.c.run_id, sa.func.count())
                .where(checkpoints.c.run_id.in_([r.id for r in rows]))
                .group_by(checkpoints.c.run_id)
            )
        ).all()
    )
    reaped: list[Reaped] = []
    dead: list[str] = []
    for row in rows:
        worker = str(row.lease_owner)
        peers = deaths[worker] - {row.id}
        trail = _next_trail(row.loss_trail, peers, int(steps.get(row.id, 0)))
        losses = int(row.lease_losses or 0) + 1
        error = _verdict(row.id, worker, losses, trail, policy)
        if error is not None:
            await conn.execute(
                sa.update(jobs).where(jobs.c.id == row.id).values(lease_losses=losses, loss_trail=trail)
            )
            await _finish(conn, row.id, JobStatus.FAILED, now, error=error)
            await append_event(conn, row.id, "job.failed", {"error": error, "lease_losses": losses})
            dead.append(row.id)
        else:
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == row.id)
                .values(
                    status=JobStatus.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=max(0, int(row.attempts) - 1),  # the lost run was not the job's fault
                    lease_losses=losses,
                    loss_trail=trail,
                    run_at=now + (random.uniform(0, policy.spread_s) if trail["streak"] >= 2 else 0.0),
                    updated_at=now,
                )
            )
            await append_event(conn, row.id, "job.lease_lost", {"worker": worker, "lease_losses": losses})
        reaped.append(Reaped(row.id, worker, losses, error))
    if dead:
        await _cascade(conn, dead, now)
    return reaped


def _next_trail(previous: Any, peers: set[str], steps_done: int) -> dict[str, Any]:
    """The streak of progress-less deaths and the jobs in flight at every one of them."""
    kept = sorted(peers) if len(peers) <= _PEERS_KEPT else None  # None: too many to tell
    prev = previous if isinstance(previous, dict) else None
    if prev is None or prev.get("steps") != steps_done:
        return {"streak": 1, "steps": steps_done, "peers": kept}
    before = prev.get("peers")
    if before is None:
        common = kept
    elif kept is None:
        common = before
    else:
        common = sorted(set(before) & peers)
    return {"streak": int(prev.get("streak", 0)) + 1, "steps": steps_done, "peers": common}


def _verdict(job_id: str, worker: str, losses: int, trail: dict[str, Any], policy: LeasePolicy) -> str | None:
    streak = int(trail["streak"])
    if streak >= policy.poison_deaths and trail["peers"] == []:
        return (
            f"job {job_id} was in flight at {streak} worker deaths in a row (the last: {worker}), "
            "the only job that was each time, without finishing a step: dead-lettered as a poison job."
        )
    if losses >= policy.max_lease_losses:
        return (
            f"job {job_id} lost its worker {losses} times (max_lease_losses {policy.max_lease_losses}): "
            "dead-lettered as a likely poison job."
        )
    return None
