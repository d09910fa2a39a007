"""`Intake`: the submissions that arrive together are written together.

When 500 people press "write" in the same second, one transaction per submission (insert the job,
check the backlog, append `job.submitted`) is 1,500 statements on the write thread, each a hand-over
to the SQLite driver's thread and back that waits for the GIL of a loop busy parsing requests.
Measured: 500 submissions took 2.5 s to be answered (p50 1.4 s), about 5 ms each. Here the
submissions that arrive while a batch is being written go together in the next (`store.batches`),
with a fixed number of statements whatever its size (`store.bulk`), each caller still getting its
own answer: its job, the job an earlier submission with its idempotency key created, or
`QueueFullError`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.errors import JobNotFoundError, QueueFullError
from storyloom.jobs.models import Job, JobStatus
from storyloom.store.batches import Batcher
from storyloom.store.bulk import Rows, existing_job_ids, insert_events, insert_jobs
from storyloom.store.database import Database
from storyloom.store.schema import jobs

__all__ = ["Intake", "submitted_event"]

_ACTIVE = sorted(s.value for s in JobStatus.QUEUED)
_MAX_BATCH = 500  # bounds one transaction's time under the write lock (~10 ms idle)
# What a new job's row leaves NULL (store.bulk.JOB_COLUMNS has the rest).
_UNSET = dict.fromkeys(("result", "error", "started_at", "finished_at", "lease_owner", "lease_expires_at"))
_Outcome = tuple[Job, bool] | Exception  # (job, created) or the error for that submission


class Intake:
    def __init__(self, db: Database, *, max_backlog: int | None) -> None:
        self.db = db
        self.max_backlog = max_backlog
        self.batcher: Batcher[dict[str, Any], tuple[Job, bool]]
        self.batcher = Batcher(self._write_batch, max_batch=_MAX_BATCH)

    async def submit(self, row: dict[str, Any]) -> tuple[Job, bool]:
        """Store the job `row` (every column of `store.bulk.JOB_COLUMNS`); (job, created)."""
        return await self.batcher(row)

    async def _write_batch(self, rows: list[dict[str, Any]]) -> list[_Outcome]:
        packed = Rows(self.db, rows)  # before the lock is taken
        write = partial(_write, db=self.db, rows=packed, max_backlog=self.max_backlog)
        return await self.db.transaction(write)


async def _write(
    conn: AsyncConnection, *, db: Database, rows: Rows, max_backlog: int | None
) -> list[_Outcome]:
    """One transaction for a batch: insert, keep what the backlog allows, look up repeated keys."""
    await insert_jobs(db, conn, rows)
    inserted = await existing_job_ids(conn, [row["id"] for row in rows.rows])
    allowed, before = len(inserted), 0
    if max_backlog is not None and inserted:
        active = int(await conn.scalar(sa.select(sa.func.count()).where(jobs.c.status.in_(_ACTIVE))) or 0)
        before = active - len(inserted)  # the backlog each submission of the batch saw, in order
        allowed = max(0, max_backlog - before)
    outcomes: list[_Outcome | None] = []
    kept: list[dict[str, Any]] = []
    refused: list[str] = []
    for row in rows.rows:
        if row["id"] not in inserted:
            outcomes.append(None)  # its key was taken: looked up below, after the refusals
        elif len(kept) < allowed:
            kept.append(row)
            outcomes.append((_new_job(row), True))
        else:
            refused.append(row["id"])
            backlog = before + len(kept) + len(refused) - 1
            outcomes.append(
                QueueFullError(
                    f"the queue holds {backlog} waiting jobs (limit {max_backlog}); retry later.",
                    retry_after_s=2.0,
                )
            )
    if refused:
        await conn.execute(sa.delete(jobs).where(jobs.c.id.in_(refused)))
    event_rows = [submitted_event(row) for row in kept]
    await insert_events(db, conn, Rows(db, event_rows))
    out: list[_Outcome] = []
    for row, outcome in zip(rows.rows, outcomes, strict=True):
        if outcome is None:
            outcome = await _repeated(conn, row, refused_in_batch=bool(refused))
        out.append(outcome)
    return out


async def _repeated(conn: AsyncConnection, row: dict[str, Any], *, refused_in_batch: bool) -> _Outcome:
    """A submission whose idempotency key exists: the job that holds it."""
    key = jobs.c.tenant == row["tenant"], jobs.c.idempotency_key == row["idempotency_key"]
    found = (await conn.execute(sa.select(jobs).where(*key))).first()
    if found is not None:
        return Job.from_row(found), False
    if refused_in_batch:  # its twin earlier in this batch was refused: so is it
        return QueueFullError("the queue is full; retry later.", retry_after_s=2.0)
    return JobNotFoundError(f"job with idempotency key {row['idempotency_key']!r} vanished")


def submitted_event(row: dict[str, Any]) -> dict[str, Any]:
    """A new job's first event (seq 1), as stored; the API's hub hands it to the job's first stream."""
    return {
        "job_id": row["id"],
        "seq": 1,
        "kind": "job.submitted",
        "step": None,
        "ts": row["created_at"],
        "data": {"kind": row["kind"], "priority": row["priority"]},
    }


def _new_job(row: dict[str, Any]) -> Job:
    return Job.from_mapping({**_UNSET, **row})
