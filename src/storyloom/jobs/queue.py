"""`JobQueue`: the durable queue on `store.Database` (same SQL on SQLite and PostgreSQL).

Clients use `submit`, `get`, `cancel`, `stats`, `events`, `wait_events`. Workers use `claim`,
`heartbeat`, `complete`, `fail`, `finish_cancelled`, `release`; every worker write is fenced by
`lease_owner`, so a worker that lost its lease cannot overwrite the job's new run.

Claiming is one statement, `UPDATE jobs ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)
RETURNING *`: Postgres skips rows other workers hold; SQLite renders no FOR UPDATE and is
serialized by its single writer (`BEGIN IMMEDIATE`). Each claim first reaps the running jobs
whose lease expired (`jobs/leases.py`: pending again, the lost run not counted as an attempt),
which is how a killed worker's jobs come back. Waiting jobs (`jobs/waits.py`) are not claimable
until they are woken, or their wait's timeout passes.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom import fastjson
from storyloom.errors import InputError, JobNotFoundError
from storyloom.jobs.compaction import ResumeCursor
from storyloom.jobs.completions import Completion
from storyloom.jobs.intake import Intake, TenantCaps, submitted_event
from storyloom.jobs.leases import LeasePolicy, reap_expired
from storyloom.jobs.models import Job, JobStatus, QueueStats, StoredEvent
from storyloom.jobs.waits import WaitFor, park, read_signals, send_signal, wake_parents
from storyloom.store.bulk import job_events_after, jobs_by_ids
from storyloom.store.database import Database
from storyloom.store.schema import checkpoints, events, jobs

if TYPE_CHECKING:
    from storyloom.jobs.events import EventHub

__all__ = ["Heartbeat", "JobQueue", "new_id"]

_ACTIVE = (JobStatus.PENDING.value, JobStatus.RETRYING.value)
_UNSTARTED = (*_ACTIVE, JobStatus.WAITING.value)  # no run in flight: cancelled at once
_RUNNING = JobStatus.RUNNING.value

# The worker path's statements, built once with bound parameters: building them per call (and
# SQLAlchemy's cache key for a fresh object) cost more than running them, several times a second
# per worker while idle. A statement object memoizes its cache key, so these compile once.
_NOW: sa.BindParameter[float] = sa.bindparam("now", type_=sa.Double())
_DEP = jobs.alias("dep")
_RUNNABLE = sa.and_(
    jobs.c.status.in_(_UNSTARTED),  # waiting: timed out
    jobs.c.run_at <= _NOW,
    sa.or_(
        jobs.c.depends_on.is_(None),
        sa.exists().where(_DEP.c.id == jobs.c.depends_on, _DEP.c.status == JobStatus.COMPLETED.value),
    ),
)
_PICK = (
    sa.select(jobs.c.id)
    .where(_RUNNABLE)
    .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.created_at)
    .limit(sa.bindparam("limit", type_=sa.Integer()))
    .with_for_update(skip_locked=True, of=jobs)
)
_TAKE = (
    sa.update(jobs)
    .where(jobs.c.id.in_(_PICK.scalar_subquery()))
    .values(
        status=_RUNNING,
        lease_owner=sa.bindparam("owner", type_=sa.String()),
        lease_expires_at=sa.bindparam("expires", type_=sa.Double()),
        attempts=jobs.c.attempts + 1,
        wait_for=None,
        started_at=sa.func.coalesce(jobs.c.started_at, _NOW),
        updated_at=_NOW,
    )
)
# PostgreSQL: the claimed rows themselves (no second read by id; asyncpg returns rows in bulk).
_TAKE_RETURNING = _TAKE.returning(*jobs.c)

# Built once with expanding parameters: a `col.in_(list)` built per call is cloned while it is
# compiled, and the clones form reference cycles that only a full collection frees (per claim and
# per heartbeat: a long-lived worker's memory grew with them).
_IDS: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
_LAST_SEQS = (
    sa.select(events.c.job_id, sa.func.max(events.c.seq))
    .where(events.c.job_id.in_(_IDS))
    .group_by(events.c.job_id)
)
_WITH_CHECKPOINTS = sa.select(checkpoints.c.run_id).where(checkpoints.c.run_id.in_(_IDS)).distinct()
# PostgreSQL: both in one statement, one index probe per job (`unnest`, a fixed text for any number
# of ids). The IN-list form was a new statement per length and, planned on a young table, a
# sequential scan of every event: half the server's CPU per no-op job in the queue bench.
_PG_RUN_STARTS = sa.text(
    "SELECT p.id, (SELECT MAX(e.seq) FROM job_events AS e WHERE e.job_id = p.id), "
    "EXISTS (SELECT 1 FROM job_checkpoints AS c WHERE c.run_id = p.id) "
    "FROM unnest(CAST(:ids AS VARCHAR[])) AS p(id)"
)
_HEARTBEAT_OWN = sa.and_(
    jobs.c.lease_owner == sa.bindparam("owner", type_=sa.String()),
    jobs.c.status == JobStatus.RUNNING.value,
    jobs.c.id.in_(_IDS),
)
_HEARTBEAT_RENEW = (
    sa.update(jobs).where(_HEARTBEAT_OWN).values(lease_expires_at=sa.bindparam("expires", type_=sa.Double()))
)
_HEARTBEAT_OWNED = sa.select(jobs.c.id).where(_HEARTBEAT_OWN)
_HEARTBEAT_CANCELS = sa.select(jobs.c.id).where(_HEARTBEAT_OWN, jobs.c.cancel_requested.is_(True))
# (owner, claim time) names one claim: one worker claims one batch at a time.
_MINE = sa.select(sa.func.json_group_array(jobs.c.id)).where(
    jobs.c.lease_owner == sa.bindparam("owner", type_=sa.String()), jobs.c.updated_at == _NOW
)
# Anything to claim, or to reap (an expired lease), for the idle claim's look before the write lock.
_ANY_CLAIMABLE = (
    sa.select(jobs.c.id)
    .where(sa.or_(_RUNNABLE, sa.and_(jobs.c.status == _RUNNING, jobs.c.lease_expires_at < _NOW)))
    .limit(1)
)
# One statement per appended event: seq = the job's max + 1, computed where it is inserted.
_APPEND = sa.insert(events).from_select(
    ["job_id", "seq", "kind", "step", "ts", "data"],
    sa.select(
        sa.bindparam("job_id", type_=sa.String()),
        sa.func.coalesce(sa.func.max(events.c.seq), 0) + 1,
        sa.bindparam("kind", type_=sa.String()),
        sa.bindparam("step", type_=sa.String()),
        sa.bindparam("ts", type_=sa.Double()),
        sa.bindparam("data", type_=sa.JSON()),
    ).where(events.c.job_id == sa.bindparam("job_id", type_=sa.String())),
)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What one heartbeat learned: the jobs this worker still owns, and those asked to cancel."""

    owned: frozenset[str]
    cancel_requested: frozenset[str]


class JobQueue:
    def __init__(
        self,
        db: Database,
        *,
        hub: EventHub | None = None,
        max_backlog: int | None = None,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 300.0,
        max_lease_losses: int = 20,
        poison_deaths: int = 3,
        loss_spread_s: float = 2.0,
    ) -> None:
        self.db = db
        self.lease_policy = LeasePolicy(
            max_lease_losses=max_lease_losses, poison_deaths=poison_deaths, spread_s=loss_spread_s
        )
        self.hub = hub
        self.max_backlog = max_backlog
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._intake: Intake | None = None  # submissions, written in batches
        self._idle = False  # the last claim found nothing to take

    # ---- clients -------------------------------------------------------------------------------

    async def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        priority: int = 5,
        idempotency_key: str | None = None,
        run_at: float | None = None,
        tenant: str = "default",
        parent_id: str | None = None,
        depends_on: str | None = None,
        max_attempts: int = 3,
        caps: TenantCaps | None = None,
        traceparent: str | None = None,
    ) -> Job:
        """Enqueue a job. The same (tenant, idempotency_key) returns the first job, even under races.

        `caps`: the tenant's own limits, checked atomically with the insert (`TenantLimitError`).
        `traceparent`: the submission's trace (storyloom.tracing), kept in its `job.submitted`."""
        if not 0 <= priority <= 9:
            raise InputError(f"priority must be between 0 and 9, got {priority}.")
        if max_attempts < 1:
            raise InputError(f"max_attempts must be at least 1, got {max_attempts}.")
        if not kind:
            raise InputError("a job needs a kind.")
        now = time.time()
        job_id = new_id()
        row = {
            "id": job_id,
            "kind": kind,
            "status": JobStatus.PENDING.value,
            "priority": priority,
            "tenant": tenant,
            "payload": payload,
            "idempotency_key": idempotency_key,
            "parent_id": parent_id,
            "depends_on": depends_on,
            "attempts": 0,
            "max_attempts": max_attempts,
            "run_at": run_at if run_at is not None else now,
            "created_at": now,
            "updated_at": now,
            "cancel_requested": False,
        }
        if self._intake is None:
            self._intake = Intake(self.db, max_backlog=self.max_backlog)
        # Followed from before its first commit: the client that submits it asks for its stream next.
        early = self.hub.expect(job_id) if self.hub is not None else None
        try:
            job, created = await self._intake.submit(row, caps, traceparent=traceparent)
        except BaseException:
            if early is not None:
                early.close()
            raise
        if early is not None and self.hub is not None:
            if created:
                self.hub.keep(job, early, StoredEvent(id=0, **submitted_event(row, traceparent)))
            else:
                early.close()
        if created:
            self._wake()
        return job

    async def get(self, job_id: str, *, tenant: str | None = None) -> Job:
        """The job; `tenant` given: only if it is that tenant's (another's is as unknown as none)."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(jobs).where(*_owned(job_id, tenant)))).first()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return Job.from_row(row)

    async def children(self, parent_id: str) -> list[Job]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(jobs).where(jobs.c.parent_id == parent_id).order_by(jobs.c.created_at)
            )
            return [Job.from_row(r) for r in rows]

    async def cancel(self, job_id: str, *, tenant: str | None = None) -> Job:
        """Pending/retrying: cancelled now. Running: flagged; its worker stops it within a heartbeat.

        `tenant` given: only that tenant's job; another's raises `JobNotFoundError`, untouched."""
        now = time.time()

        async def tx(conn: AsyncConnection) -> Job:
            row = (await conn.execute(sa.select(jobs).where(*_owned(job_id, tenant)))).first()
            if row is None:
                raise JobNotFoundError(f"no job {job_id!r}")
            job = Job.from_row(row)
            if job.status.value in _UNSTARTED:
                await _finish(conn, job_id, JobStatus.CANCELLED, now, error="cancelled by request")
                await append_event(conn, job_id, "job.cancelled", {"reason": "cancelled by request"})
                await _cascade(conn, [job_id], now)
            elif job.status is JobStatus.RUNNING:
                await conn.execute(
                    sa.update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True, updated_at=now)
                )
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
            assert row is not None
            return Job.from_row(row)

        job = await self.db.transaction(tx)
        self._wake()
        return job

    async def stats(self) -> QueueStats:
        now = time.time()
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status))
            counts = {s.value: 0 for s in JobStatus}
            for status, n in rows:
                counts[status] = int(n)
            due_row = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(jobs.c.run_at)).where(
                        jobs.c.status.in_(_ACTIVE), jobs.c.run_at <= now
                    )
                )
            ).one()
        due, oldest = int(due_row[0] or 0), due_row[1]
        return QueueStats(
            counts=counts,
            queued=counts["pending"] + counts["retrying"],
            due=due,
            running=counts["running"],
            oldest_due_age_s=max(0.0, now - float(oldest)) if oldest is not None else 0.0,
        )

    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """The job's events with seq > after, in order (compacted deltas trimmed to what a reader
        that had everything up to `after` lacks: `jobs/compaction.py`)."""
        async with self.db.read() as conn:
            found = await read_events(conn, job_id, after, limit)
        cursor = ResumeCursor(after)
        return [cursor.deliver(ev) for ev in found]

    async def wait_events(
        self, job_id: str, after: int = 0, timeout_s: float = 15.0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Like `events`, but waits up to `timeout_s` for at least one (long polling)."""
        if self.hub is not None:
            return await self.hub.wait(job_id, after, timeout_s=timeout_s, limit=limit)
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.events(job_id, after, limit)
            if found or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # ---- workers -------------------------------------------------------------------------------

    async def claim(self, worker_id: str, *, limit: int, lease_s: float) -> list[Job]:
        """Take up to `limit` runnable jobs (highest priority first) under a lease."""
        if limit <= 0:
            return []
        now = time.time()
        if self._idle:  # the last claim found nothing: look before taking the write lock
            async with self.db.read() as conn:
                if (await conn.execute(_ANY_CLAIMABLE, {"now": now})).first() is None:
                    return []
        params = {"now": now, "owner": worker_id, "expires": now + lease_s, "limit": limit}
        is_sqlite = self.db.is_sqlite
        policy = self.lease_policy

        # Only the ids inside the write transaction, and on SQLite as one packed value: returning
        # every claimed row (payload and all) steps once per row, each step re-taking the GIL with
        # the write lock held (see store.bulk). The rows are read after the commit: they are ours.
        async def tx(conn: AsyncConnection) -> list[str] | list[Job]:
            await reap_expired(conn, now, policy)
            if not is_sqlite:
                return [Job.from_row(r) for r in await conn.execute(_TAKE_RETURNING, params)]
            await conn.execute(_TAKE, params)
            return list(fastjson.loads(await conn.scalar(_MINE, params) or "[]"))

        taken = await self.db.transaction(tx)
        self._idle = not taken
        if not taken:
            return []
        if isinstance(taken[0], Job):
            claimed = [j for j in taken if isinstance(j, Job)]
        else:
            async with self.db.read() as conn:
                rows = await jobs_by_ids(conn, [i for i in taken if isinstance(i, str)])
            claimed = [Job.from_mapping(r) for r in rows if r["lease_owner"] == worker_id]
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.created_at))
        return claimed

    async def run_starts(self, job_ids: list[str]) -> dict[str, tuple[int, bool]]:
        """Per job: its last event seq and whether it has any checkpoint, in two queries in all
        (one on PostgreSQL)."""
        if not job_ids:
            return {}
        params = {"ids": job_ids}
        async with self.db.read() as conn:
            if not self.db.is_sqlite:
                rows = await conn.execute(_PG_RUN_STARTS, params)
                return {job_id: (int(seq or 0), bool(has)) for job_id, seq, has in rows}
            seqs = dict((await conn.execute(_LAST_SEQS, params)).all())
            stored = set((await conn.scalars(_WITH_CHECKPOINTS, params)).all())
        return {job_id: (int(seqs.get(job_id) or 0), job_id in stored) for job_id in job_ids}

    async def heartbeat(
        self, worker_id: str, *, lease_s: float, job_ids: Iterable[str] | None = None
    ) -> Heartbeat:
        """Renew the worker's leases in one UPDATE; report lost jobs and cancel requests.

        `job_ids`: renew only these (the runs the worker really has), so a lease whose run vanished
        without bookkeeping expires instead of being renewed forever.
        """
        asked = list(job_ids) if job_ids is not None else None
        if asked is not None:
            return await self._heartbeat_of(worker_id, lease_s, asked)
        cond = [jobs.c.lease_owner == worker_id, jobs.c.status == JobStatus.RUNNING.value]
        renew = sa.update(jobs).where(*cond).values(lease_expires_at=time.time() + lease_s)

        # No RETURNING of every renewed row: on SQLite each returned row re-takes the GIL, with the
        # write lock held (see store.bulk). Usually every job is still owned: one UPDATE, one
        # SELECT that finds no cancel request.
        async def tx(conn: AsyncConnection) -> Heartbeat:
            await conn.execute(renew)
            owned = frozenset((await conn.scalars(sa.select(jobs.c.id).where(*cond))).all())
            cancels = sa.select(jobs.c.id).where(*cond, jobs.c.cancel_requested.is_(True))
            return Heartbeat(owned=owned, cancel_requested=frozenset((await conn.scalars(cancels)).all()))

        return await self.db.transaction(tx)

    async def _heartbeat_of(self, worker_id: str, lease_s: float, asked: list[str]) -> Heartbeat:
        """The worker's beat: only the runs it has, through statements built once."""
        params = {"owner": worker_id, "ids": asked}

        async def tx(conn: AsyncConnection) -> Heartbeat:
            renewed = (
                await conn.execute(_HEARTBEAT_RENEW, {**params, "expires": time.time() + lease_s})
            ).rowcount
            if renewed == len(set(asked)):
                owned = frozenset(asked)
            else:
                owned = frozenset((await conn.scalars(_HEARTBEAT_OWNED, params)).all())
            cancels = (await conn.scalars(_HEARTBEAT_CANCELS, params)).all()
            return Heartbeat(owned=owned, cancel_requested=frozenset(cancels))

        return await self.db.transaction(tx)

    async def complete(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool:
        """Mark completed (with the terminal event, atomically). False: the lease was lost."""
        if not await self.db.transaction(self.completion(job_id, worker_id, result)):
            return False
        self.completed()
        return True

    def completion(
        self, job_id: str, worker_id: str, result: dict[str, Any]
    ) -> Callable[[AsyncConnection], Awaitable[bool]]:
        """`complete`'s transaction, for a writer that commits it with other rows (the worker's
        group commit, with the job's last events); call `completed()` once it has committed.

        It is a `Completion`: the group-commit writer runs the completions of one commit together
        (`Completion.run_batch`), a fixed few statements for the whole batch instead of three each."""
        return Completion(job_id, worker_id, result, time.time())

    def completed(self) -> None:
        """A completion committed: wake this process's hub."""
        self._wake()

    async def fail(
        self, job_id: str, worker_id: str, error: str, *, retryable: bool = True
    ) -> JobStatus | None:
        """Retry with exponential backoff while attempts remain, else dead-letter. None: lease lost."""
        now = time.time()

        async def tx(conn: AsyncConnection) -> JobStatus | None:
            row = (
                await conn.execute(
                    sa.select(jobs.c.attempts, jobs.c.max_attempts).where(
                        jobs.c.id == job_id,
                        jobs.c.lease_owner == worker_id,
                        jobs.c.status == JobStatus.RUNNING.value,
                    )
                )
            ).first()
            if row is None:
                return None
            attempts, max_attempts = int(row[0]), int(row[1])
            if retryable and attempts < max_attempts:
                delay = self.backoff_delay_s(attempts)
                await conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(
                        status=JobStatus.RETRYING.value,
                        run_at=now + delay,
                        error=error,
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now,
                    )
                )
                await append_event(
                    conn, job_id, "job.retrying", {"error": error, "attempt": attempts, "delay_s": delay}
                )
                return JobStatus.RETRYING
            await _finish(conn, job_id, JobStatus.FAILED, now, error=error)
            await append_event(conn, job_id, "job.failed", {"error": error, "attempts": attempts})
            await _cascade(conn, [job_id], now)
            return JobStatus.FAILED

        return await self.db.transaction(tx)

    async def finish_cancelled(
        self, job_id: str, worker_id: str, reason: str = "cancelled by request"
    ) -> bool:
        now = time.time()

        async def tx(conn: AsyncConnection) -> bool:
            if not await _finish(conn, job_id, JobStatus.CANCELLED, now, error=reason, owner=worker_id):
                return False
            await append_event(conn, job_id, "job.cancelled", {"reason": reason})
            await _cascade(conn, [job_id], now)
            return True

        return await self.db.transaction(tx)

    async def release(self, worker_id: str, job_ids: Iterable[str] | None = None) -> int:
        """Give running jobs back (graceful shutdown): pending again, the attempt not counted."""
        now = time.time()
        cond = [jobs.c.lease_owner == worker_id, jobs.c.status == JobStatus.RUNNING.value]
        if job_ids is not None:
            cond.append(jobs.c.id.in_(list(job_ids)))
        is_sqlite = self.db.is_sqlite

        async def tx(conn: AsyncConnection) -> int:
            rows = (
                await conn.execute(
                    sa.update(jobs)
                    .where(*cond)
                    .values(
                        status=JobStatus.PENDING.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        attempts=sa.func.max(jobs.c.attempts - 1, 0)
                        if is_sqlite
                        else sa.func.greatest(jobs.c.attempts - 1, 0),
                        run_at=now,
                        updated_at=now,
                    )
                    .returning(jobs.c.id)
                )
            ).all()
            for (job_id,) in rows:
                await append_event(conn, job_id, "job.released", {"worker": worker_id})
            return len(rows)

        return await self.db.transaction(tx)

    async def expire_leases(self, worker_id: str) -> int:
        """Void the leases of a worker known to be dead (its supervisor saw it exit): the next
        claim reaps its jobs (`jobs/leases.py`) instead of waiting for the leases to run out."""
        stmt = (
            sa.update(jobs)
            .where(jobs.c.lease_owner == worker_id, jobs.c.status == JobStatus.RUNNING.value)
            .values(lease_expires_at=0.0)
        )

        async def tx(conn: AsyncConnection) -> int:
            return int((await conn.execute(stmt)).rowcount or 0)

        return await self.db.transaction(tx)

    async def suspend(self, job_id: str, worker_id: str, wait: WaitFor) -> JobStatus | None:
        """Park a running job until `wait` holds (`jobs/waits.py`): WAITING, PENDING if it already
        holds, None if the lease was lost."""
        now = time.time()
        status = await self.db.transaction(lambda conn: park(conn, job_id, worker_id, wait, now))
        self._wake()
        return status

    async def signal(self, job_id: str, name: str, payload: Any = None, *, tenant: str | None = None) -> Job:
        """Send a named signal to a job; a job waiting for it is queued again at once.

        Kept whatever the job's state (the latest payload per name), so a signal sent before the
        wait is not lost. A job that has ended: `ConflictError`; another tenant's: `JobNotFoundError`."""
        if not 1 <= len(name) <= 200:
            raise InputError("a signal name has 1 to 200 characters.")
        now = time.time()
        job, _ = await self.db.transaction(lambda conn: send_signal(conn, job_id, name, payload, tenant, now))
        self._wake()
        return job

    async def signals(self, job_id: str) -> dict[str, Any]:
        """Every signal the job received so far: name -> latest payload."""
        async with self.db.read() as conn:
            return await read_signals(conn, job_id)

    def _wake(self) -> None:
        if self.hub is not None:
            self.hub.wake()

    def backoff_delay_s(self, attempts: int) -> float:
        """Exponential backoff with full jitter in the upper half: base * 2^(attempts-1)."""
        raw = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** max(0, attempts - 1))
        return raw * (0.5 + random.random() / 2)


# ---- shared statements -----------------------------------------------------------------------


def _owned(job_id: str, tenant: str | None) -> list[sa.ColumnElement[bool]]:
    cond = [jobs.c.id == job_id]
    if tenant is not None:
        cond.append(jobs.c.tenant == tenant)
    return cond


async def read_events(conn: AsyncConnection, job_id: str, after: int, limit: int) -> list[StoredEvent]:
    return [StoredEvent.from_tuple(r) for r in await job_events_after(conn, job_id, after, limit)]


async def append_event(
    conn: AsyncConnection,
    job_id: str,
    kind: str,
    data: dict[str, Any],
    *,
    step: str | None = None,
) -> None:
    """Append one event outside a run, seq = max + 1 in the same transaction.

    Safe because these writes happen only when no run of the job is writing (cancel of a queued
    job, the run's own final transaction after its buffered events were flushed).
    """
    params = {"job_id": job_id, "kind": kind, "step": step, "ts": time.time(), "data": data}
    await conn.execute(_APPEND, params)


async def _finish(
    conn: AsyncConnection,
    job_id: str,
    status: JobStatus,
    now: float,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    owner: str | None = None,
) -> bool:
    cond = [jobs.c.id == job_id]
    if owner is not None:
        cond += [jobs.c.lease_owner == owner, jobs.c.status == JobStatus.RUNNING.value]
    values: dict[str, Any] = {
        "status": status.value,
        "finished_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "wait_for": None,
    }
    if result is not None:
        values["result"] = result
    if error is not None:
        values["error"] = error
    res = await conn.execute(sa.update(jobs).where(*cond).values(**values))
    return bool(res.rowcount)


async def _cascade(conn: AsyncConnection, failed_ids: list[str], now: float) -> None:
    """Jobs waiting on a job that will never complete can never run: fail them, transitively.

    Children of a cancelled/failed parent are cancelled too (queued ones now, running ones flagged).
    Parents waiting for their children are woken once the last one has ended.
    """
    frontier = list(failed_ids)
    while frontier:
        await wake_parents(conn, frontier, now)
        waiting = (
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.depends_on.in_(frontier), jobs.c.status.in_(_ACTIVE))
                .values(
                    status=JobStatus.FAILED.value,
                    error="a job it depends on did not complete",
                    finished_at=now,
                    updated_at=now,
                )
                .returning(jobs.c.id)
            )
        ).all()
        kids = (
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.parent_id.in_(frontier), jobs.c.status.in_(_UNSTARTED))
                .values(
                    status=JobStatus.CANCELLED.value,
                    wait_for=None,
                    error="its parent job ended",
                    finished_at=now,
                    updated_at=now,
                )
                .returning(jobs.c.id)
            )
        ).all()
        await conn.execute(
            sa.update(jobs)
            .where(jobs.c.parent_id.in_(frontier), jobs.c.status == JobStatus.RUNNING.value)
            .values(cancel_requested=True, updated_at=now)
        )
        for (jid,) in waiting:
            await append_event(conn, jid, "job.failed", {"error": "a job it depends on did not complete"})
        for (jid,) in kids:
            await append_event(conn, jid, "job.cancelled", {"reason": "its parent job ended"})
        frontier = [r[0] for r in waiting] + [r[0] for r in kids]
