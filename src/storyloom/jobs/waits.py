"""Jobs that wait without holding a worker slot: for their children, or for a named signal.

A handler raises `WaitFor`; the worker hands the job to `park`, which turns it `waiting` (no
lease, no slot, its attempt given back) unless the condition already holds. What makes the
condition true re-queues the job in the same transaction: the last child ending (`wake_parents`,
called wherever a job reaches a terminal status) or `send_signal`. The re-run starts the handler
from the top; checkpoints and idempotent child submissions make that cheap.

Races on PostgreSQL (READ COMMITTED): both sides lock the waiting job's row first (`FOR UPDATE`),
so either the park sees the child's end / the signal, or the waker sees the park. SQLite has one
writer, which serializes them anyway.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.errors import ConflictError, JobNotFoundError
from storyloom.jobs.models import Job, JobStatus
from storyloom.store.schema import job_signals, jobs

__all__ = ["NEVER_S", "WaitFor", "park", "read_signals", "send_signal", "wake_parents"]

NEVER_S = 100 * 365 * 86_400.0  # run_at offset of a wait without timeout: claimable never
_TERMINAL = sorted(s.value for s in JobStatus.TERMINAL)


class WaitFor(Exception):
    """Raised by a handler to park its job until its children end or a signal arrives.

    A signal, not an error: the worker never records it as a failure. Raise it from the handler,
    not from inside a flow step (a step's failure policy would treat it as the step's error)."""

    def __init__(
        self, *, children: bool = False, signal: str | None = None, timeout_s: float | None = None
    ) -> None:
        if children == (signal is not None):
            raise ValueError("WaitFor needs exactly one of children=True or signal=<name>")
        if signal is not None and not 1 <= len(signal) <= 200:
            raise ValueError("a signal name has 1 to 200 characters")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.children = children
        self.signal = signal
        self.timeout_s = timeout_s
        super().__init__(f"wait for {'children' if children else f'signal {signal!r}'}")

    @property
    def condition(self) -> dict[str, Any]:
        """What is stored in `jobs.wait_for`."""
        return {"children": True} if self.children else {"signal": self.signal}

    def event_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"for": "children" if self.children else "signal"}
        if self.signal is not None:
            data["signal"] = self.signal
        if self.timeout_s is not None:
            data["timeout_s"] = self.timeout_s
        return data


async def park(
    conn: AsyncConnection, job_id: str, worker_id: str, wait: WaitFor, now: float
) -> JobStatus | None:
    """Suspend a running job of `worker_id`. Returns WAITING, PENDING (already met) or None (lease lost)."""
    from storyloom.jobs.queue import append_event  # the queue imports this module

    row = (
        await conn.execute(
            sa.select(jobs.c.attempts)
            .where(jobs.c.id == job_id, jobs.c.lease_owner == worker_id, jobs.c.status == "running")
            .with_for_update()
        )
    ).first()
    if row is None:
        return None
    met = await _condition_met(conn, job_id, wait.condition)
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": max(0, int(row[0]) - 1),  # a wait is not an attempt
        "updated_at": now,
    }
    await append_event(conn, job_id, "job.waiting", wait.event_data())
    if met:
        values.update(status=JobStatus.PENDING.value, wait_for=None, run_at=now)
        await append_event(conn, job_id, "job.resumed", _reason(wait.condition))
    else:
        timeout = wait.timeout_s if wait.timeout_s is not None else NEVER_S
        values.update(status=JobStatus.WAITING.value, wait_for=wait.condition, run_at=now + timeout)
    await conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**values))
    return JobStatus.PENDING if met else JobStatus.WAITING


# Built once (on every job's end): a per-call `in_(list)` leaves a reference cycle in SQLAlchemy's
# clones that only a full collection frees.
_PARENTS_OF = (
    sa.select(jobs.c.parent_id)
    .where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)), jobs.c.parent_id.is_not(None))
    .distinct()
)


async def wake_parents(conn: AsyncConnection, ended_ids: list[str], now: float) -> list[str]:
    """Re-queue the parents, waiting for their children, whose last unfinished child just ended."""
    from storyloom.jobs.queue import append_event

    if not ended_ids:
        return []
    parents = (await conn.scalars(_PARENTS_OF, {"ids": ended_ids})).all()
    woken: list[str] = []
    for parent_id in sorted(p for p in parents if p is not None):  # sorted: one lock order
        row = (
            await conn.execute(
                sa.select(jobs.c.wait_for)
                .where(jobs.c.id == parent_id, jobs.c.status == JobStatus.WAITING.value)
                .with_for_update()
            )
        ).first()
        if row is None or not (row[0] or {}).get("children"):
            continue
        if not await _condition_met(conn, parent_id, {"children": True}):
            continue
        await _resume(conn, parent_id, now)
        await append_event(conn, parent_id, "job.resumed", {"reason": "children"})
        woken.append(parent_id)
    return woken


async def send_signal(
    conn: AsyncConnection, job_id: str, name: str, payload: Any, tenant: str | None, now: float
) -> tuple[Job, bool]:
    """Store the signal; re-queue the job if it waits for `name`. Returns the job and whether it woke."""
    from storyloom.jobs.queue import append_event

    cond = [jobs.c.id == job_id] + ([jobs.c.tenant == tenant] if tenant is not None else [])
    row = (await conn.execute(sa.select(jobs).where(*cond).with_for_update())).first()
    if row is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    job = Job.from_row(row)
    if job.status.is_terminal:
        raise ConflictError(f"job {job_id} has ended ({job.status.value}); it takes no more signals.")
    this = (job_signals.c.job_id == job_id, job_signals.c.name == name)
    await conn.execute(sa.delete(job_signals).where(*this))
    await conn.execute(sa.insert(job_signals).values(job_id=job_id, name=name, payload=payload, ts=now))
    await append_event(conn, job_id, "job.signal", {"name": name})
    woke = job.status is JobStatus.WAITING and (job.wait_for or {}).get("signal") == name
    if woke:
        await _resume(conn, job_id, now)
        await append_event(conn, job_id, "job.resumed", {"reason": "signal", "signal": name})
    fresh = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
    assert fresh is not None
    return Job.from_row(fresh), woke


async def read_signals(conn: AsyncConnection, job_id: str) -> dict[str, Any]:
    rows = await conn.execute(
        sa.select(job_signals.c.name, job_signals.c.payload).where(job_signals.c.job_id == job_id)
    )
    return {str(name): payload for name, payload in rows.all()}


async def _condition_met(conn: AsyncConnection, job_id: str, condition: dict[str, Any]) -> bool:
    if condition.get("children"):
        unfinished = await conn.scalar(
            sa.select(sa.func.count()).where(jobs.c.parent_id == job_id, jobs.c.status.not_in(_TERMINAL))
        )
        return not unfinished
    name = condition.get("signal")
    found = await conn.scalar(
        sa.select(sa.func.count()).where(job_signals.c.job_id == job_id, job_signals.c.name == name)
    )
    return bool(found)


async def _resume(conn: AsyncConnection, job_id: str, now: float) -> None:
    await conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id)
        .values(status=JobStatus.PENDING.value, wait_for=None, run_at=now, updated_at=now)
    )


def _reason(condition: dict[str, Any]) -> dict[str, Any]:
    if condition.get("children"):
        return {"reason": "children"}
    return {"reason": "signal", "signal": condition.get("signal")}
