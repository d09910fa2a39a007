"""Looking after jobs: list them (dead letters included) and run a finished one again.

A failed job keeps its error, checkpoints and events until retention removes them, so a retry
resumes from its last finished step instead of starting over.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.errors import ConflictError, InputError, JobNotFoundError
from storyloom.jobs.models import Job, JobStatus
from storyloom.jobs.queue import JobQueue, append_event
from storyloom.store.schema import jobs

__all__ = ["JobPage", "list_jobs", "retry_job"]

_RETRYABLE = (JobStatus.FAILED.value, JobStatus.CANCELLED.value)


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    total: int  # matching jobs in all, for paging


async def list_jobs(
    queue: JobQueue,
    *,
    statuses: Sequence[str] = (),
    kinds: Sequence[str] = (),
    tenant: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> JobPage:
    """Newest first. `tenant` None: every tenant's (admins)."""
    cond: list[sa.ColumnElement[bool]] = []
    if statuses:
        unknown = sorted(set(statuses) - {s.value for s in JobStatus})
        if unknown:
            raise InputError(
                f"unknown job status {unknown[0]!r}: use one of {', '.join(s.value for s in JobStatus)}."
            )
        cond.append(jobs.c.status.in_(list(statuses)))
    if kinds:
        cond.append(jobs.c.kind.in_(list(kinds)))
    if tenant is not None:
        cond.append(jobs.c.tenant == tenant)
    page = (
        sa.select(jobs).where(*cond).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit).offset(offset)
    )
    count = sa.select(sa.func.count()).select_from(jobs).where(*cond)
    async with queue.db.read() as conn:
        rows = (await conn.execute(page)).all()
        total = int(await conn.scalar(count) or 0)
    return JobPage([Job.from_row(r) for r in rows], total)


async def retry_job(queue: JobQueue, job_id: str, *, tenant: str | None = None) -> Job:
    """A failed or cancelled job back to the queue with a fresh retry budget (its finished steps
    stay checkpointed). Anything else is refused with a sentence saying why."""
    now = time.time()

    async def tx(conn: AsyncConnection) -> Job:
        cond = [jobs.c.id == job_id]
        if tenant is not None:
            cond.append(jobs.c.tenant == tenant)
        row = (await conn.execute(sa.select(jobs).where(*cond))).first()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        job = Job.from_row(row)
        if job.status.value not in _RETRYABLE:
            raise ConflictError(
                f"job {job_id} is {job.status.value}: only failed or cancelled jobs can be retried."
            )
        await conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                status=JobStatus.PENDING.value,
                attempts=0,
                run_at=now,
                finished_at=None,
                cancel_requested=False,
                updated_at=now,
            )
        )
        await append_event(
            conn, job_id, "job.retried", {"previous_status": job.status.value, "error": job.error}
        )
        fresh = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        assert fresh is not None
        return Job.from_row(fresh)

    job = await queue.db.transaction(tx)
    if queue.hub is not None:
        queue.hub.wake()
    return job
