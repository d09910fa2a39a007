"""`Intake`: the submissions that arrive together are written together.

When 500 people press "write" in the same second, one transaction per submission (insert the job,
check the backlog, append `job.submitted`) is 1,500 statements on the write thread, each a hand-over
to the SQLite driver's thread and back that waits for the GIL of a loop busy parsing requests.
Measured: 500 submissions took 2.5 s to be answered (p50 1.4 s), about 5 ms each. Here the
submissions that arrive while a batch is being written go together in the next (`store.batches`),
with a fixed number of statements whatever its size (`store.bulk`), each caller still getting its
own answer: its job, the job an earlier submission with its idempotency key created,
`QueueFullError`, or `TenantLimitError` when its tenant is over one of its `TenantCaps`.

The caps are counted in the transaction that inserts the jobs, from the jobs table itself, so every
API process of a deployment shares them without another store: exact on SQLite (one writer at a
time), and on Postgres too, where each capped tenant's batch first takes a transaction-scoped
advisory lock on the tenant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.errors import JobNotFoundError, QueueFullError, TenantLimitError
from storyloom.jobs.models import Job, JobStatus
from storyloom.store.batches import Batcher
from storyloom.store.bulk import Rows, existing_job_ids, insert_events, insert_jobs
from storyloom.store.database import Database
from storyloom.store.schema import jobs

__all__ = ["Intake", "TenantCaps", "submitted_event"]

_ACTIVE = sorted(s.value for s in JobStatus.QUEUED)
_UNFINISHED = sorted(s.value for s in (*JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.WAITING))
_WINDOW_S = 60.0  # TenantCaps.per_minute counts the submissions of this many seconds
_FULL_RETRY_S = 5.0  # a tenant at its job cap: when one of its jobs may have finished (unknowable)
_MAX_BATCH = 500  # bounds one transaction's time under the write lock (~10 ms idle)
# What a new job's row leaves NULL (store.bulk.JOB_COLUMNS has the rest).
_UNSET = dict.fromkeys(("result", "error", "started_at", "finished_at", "lease_owner", "lease_expires_at"))
_Outcome = tuple[Job, bool] | Exception  # (job, created) or the error for that submission


@dataclass(frozen=True, slots=True)
class TenantCaps:
    """A tenant's own limits on new jobs; None: no limit. Repeats of an accepted job never count."""

    max_jobs: int | None = None  # the tenant's queued and running jobs, the new one included
    per_minute: int | None = None  # jobs the tenant submitted in the last 60 s, the new one included
    # Set: no new job at all, for this reason (its tenant spent a budget); a repeat still gets its job.
    refuse_new: TenantLimitError | None = None

    @property
    def any(self) -> bool:
        return self.max_jobs is not None or self.per_minute is not None or self.refuse_new is not None


class Intake:
    def __init__(self, db: Database, *, max_backlog: int | None) -> None:
        self.db = db
        self.max_backlog = max_backlog
        self.batcher: Batcher[tuple[dict[str, Any], TenantCaps | None], tuple[Job, bool]]
        self.batcher = Batcher(self._write_batch, max_batch=_MAX_BATCH)
        self._traces: dict[str, str] = {}  # job id -> traceparent, until its batch is written

    async def submit(
        self, row: dict[str, Any], caps: TenantCaps | None = None, *, traceparent: str | None = None
    ) -> tuple[Job, bool]:
        """Store the job `row` (every column of `store.bulk.JOB_COLUMNS`); (job, created)."""
        if traceparent is not None:
            self._traces[row["id"]] = traceparent
        try:
            return await self.batcher((row, caps))
        finally:
            self._traces.pop(row["id"], None)

    async def _write_batch(self, items: list[tuple[dict[str, Any], TenantCaps | None]]) -> list[_Outcome]:
        rows = [row for row, _ in items]
        caps = {row["tenant"]: cap for row, cap in items if cap is not None and cap.any}
        packed = Rows(self.db, rows)  # before the lock is taken
        traces = {row["id"]: self._traces[row["id"]] for row in rows if row["id"] in self._traces}
        write = partial(
            _write, db=self.db, rows=packed, max_backlog=self.max_backlog, caps=caps, traces=traces
        )
        return await self.db.transaction(write)


@dataclass(slots=True)
class _TenantUse:
    """What a capped tenant had before this batch, and what this batch has kept so far."""

    caps: TenantCaps
    unfinished: int = 0
    recent: int = 0
    oldest_recent: float | None = None
    kept: int = 0

    def refusal(self, tenant: str, now: float) -> TenantLimitError | None:
        cap = self.caps
        if cap.refuse_new is not None:
            return cap.refuse_new
        if cap.max_jobs is not None and self.unfinished + self.kept >= cap.max_jobs:
            return TenantLimitError(
                f"tenant {tenant!r} has {self.unfinished + self.kept} jobs queued or running, its limit "
                f"(max_jobs {cap.max_jobs}); submit again once one has finished.",
                limit="max_jobs",
                retry_after_s=_FULL_RETRY_S,
            )
        if cap.per_minute is not None and self.recent + self.kept >= cap.per_minute:
            oldest = self.oldest_recent if self.oldest_recent is not None else now
            return TenantLimitError(
                f"tenant {tenant!r} submitted {self.recent + self.kept} jobs in the last minute, its limit "
                f"(submissions_per_minute {cap.per_minute}).",
                limit="submissions_per_minute",
                retry_after_s=max(1.0, oldest + _WINDOW_S - now),
            )
        return None


async def _tenant_use(
    conn: AsyncConnection, caps: dict[str, TenantCaps], inserted: list[dict[str, Any]], now: float
) -> dict[str, _TenantUse]:
    """Each capped tenant's unfinished jobs and last minute's submissions, before this batch."""
    tenants = sorted({row["tenant"] for row in inserted if row["tenant"] in caps})
    if not tenants:
        return {}
    if conn.dialect.name == "postgresql":  # serialize each tenant's capped batches (sorted: no deadlock)
        for tenant in tenants:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(tenant, 0))))
    use = {t: _TenantUse(caps[t]) for t in tenants}
    mine: dict[str, int] = {}
    for row in inserted:
        mine[row["tenant"]] = mine.get(row["tenant"], 0) + 1
    counted = [t for t in tenants if caps[t].max_jobs is not None]
    if counted:
        query = (
            sa.select(jobs.c.tenant, sa.func.count())
            .where(jobs.c.tenant.in_(counted), jobs.c.status.in_(_UNFINISHED))
            .group_by(jobs.c.tenant)
        )
        for tenant, n in await conn.execute(query):
            use[tenant].unfinished = int(n) - mine.get(tenant, 0)
    windowed = [t for t in tenants if caps[t].per_minute is not None]
    if windowed:
        query = (
            sa.select(jobs.c.tenant, sa.func.count(), sa.func.min(jobs.c.created_at))
            .where(jobs.c.tenant.in_(windowed), jobs.c.created_at > now - _WINDOW_S)
            .group_by(jobs.c.tenant)
        )
        for tenant, n, oldest in await conn.execute(query):
            use[tenant].recent, use[tenant].oldest_recent = int(n) - mine.get(tenant, 0), float(oldest)
    return use


async def _write(
    conn: AsyncConnection,
    *,
    db: Database,
    rows: Rows,
    max_backlog: int | None,
    caps: dict[str, TenantCaps],
    traces: dict[str, str],
) -> list[_Outcome]:
    """One transaction for a batch: insert, keep what the caps and the backlog allow, look up
    repeated keys."""
    inserted = await insert_jobs(db, conn, rows)
    if inserted is None:
        inserted = await existing_job_ids(conn, [row["id"] for row in rows.rows])
    now = time.time()
    use = await _tenant_use(conn, caps, [r for r in rows.rows if r["id"] in inserted], now) if caps else {}
    allowed, before = len(inserted), 0
    if max_backlog is not None and inserted:
        active = int(await conn.scalar(sa.select(sa.func.count()).where(jobs.c.status.in_(_ACTIVE))) or 0)
        before = active - len(inserted)  # the backlog each submission of the batch saw, in order
        allowed = max(0, max_backlog - before)
    outcomes: list[_Outcome | None] = []
    kept: list[dict[str, Any]] = []
    refused: list[str] = []
    refusals: dict[tuple[str, str], Exception] = {}  # (tenant, key) -> why: for a repeat in the batch
    for row in rows.rows:
        tenant_use = use.get(row["tenant"])
        if row["id"] not in inserted:
            outcomes.append(None)  # its key was taken: looked up below, after the refusals
        elif tenant_use is not None and (over := tenant_use.refusal(row["tenant"], now)) is not None:
            refused.append(row["id"])
            outcomes.append(over)
        elif len(kept) < allowed:
            kept.append(row)
            if tenant_use is not None:
                tenant_use.kept += 1
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
        last = outcomes[-1]
        if isinstance(last, Exception) and row["idempotency_key"] is not None:
            refusals[(row["tenant"], row["idempotency_key"])] = last
    if refused:
        await conn.execute(sa.delete(jobs).where(jobs.c.id.in_(refused)))
    event_rows = [submitted_event(row, traces.get(row["id"])) for row in kept]
    await insert_events(db, conn, Rows(db, event_rows))
    out: list[_Outcome] = []
    for row, outcome in zip(rows.rows, outcomes, strict=True):
        if outcome is None:
            outcome = await _repeated(conn, row, refusals)
        out.append(outcome)
    return out


async def _repeated(
    conn: AsyncConnection, row: dict[str, Any], refusals: dict[tuple[str, str], Exception]
) -> _Outcome:
    """A submission whose idempotency key exists: the job that holds it."""
    key = jobs.c.tenant == row["tenant"], jobs.c.idempotency_key == row["idempotency_key"]
    found = (await conn.execute(sa.select(jobs).where(*key))).first()
    if found is not None:
        return Job.from_row(found), False
    twin = refusals.get((row["tenant"], row["idempotency_key"]))
    if twin is not None:  # its twin earlier in this batch was refused: so is it
        return twin
    return JobNotFoundError(f"job with idempotency key {row['idempotency_key']!r} vanished")


def submitted_event(row: dict[str, Any], traceparent: str | None = None) -> dict[str, Any]:
    """A new job's first event (seq 1), as stored; the API's hub hands it to the job's first stream.
    `traceparent`: the submission's trace, which the job's workers continue (storyloom.tracing)."""
    data: dict[str, Any] = {"kind": row["kind"], "priority": row["priority"]}
    if traceparent is not None:
        data["traceparent"] = traceparent
    return {
        "job_id": row["id"],
        "seq": 1,
        "kind": "job.submitted",
        "step": None,
        "ts": row["created_at"],
        "data": data,
    }


def _new_job(row: dict[str, Any]) -> Job:
    return Job.from_mapping({**_UNSET, **row})
