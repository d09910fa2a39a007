"""`Completion`: one job's completion as a value, so that a commit's completions run as one batch.

A worker's group commit (`jobs.durable`) carries the completions of every job that ended since the
last commit. Run one by one, each was three statements (the fenced UPDATE, its `job.completed`
event, the look for a parent to wake): on PostgreSQL three round trips per job, and at 100 no-op
jobs per commit the commit was 300 statements, most of the worker's and the server's CPU per job.
`Completion.run_batch` does the same for the whole batch in a fixed number of statements: on
PostgreSQL one (an UPDATE … FROM unnest whose RETURNING feeds the events' INSERT), on SQLite three
(which are ours, the UPDATE … FROM json_each, the events' INSERT … SELECT).

The outcome per completion is what running them one after the other gives: True if it completed the
job, False if the lease was not its own (another owner, or the job not running). A second
completion of the same job by the same owner in one batch finds the job completed: False.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom import fastjson
from storyloom.jobs.models import JobStatus
from storyloom.jobs.waits import wake_parents
from storyloom.store.inline import text_execute, text_scalar
from storyloom.store.schema import jobs

__all__ = ["Completion"]

_COMPLETED = JobStatus.COMPLETED.value
_RUNNING = JobStatus.RUNNING.value
_NOW: sa.BindParameter[float] = sa.bindparam("now", type_=sa.Double())
# `->` and `->>` arrived in SQLite 3.38 (UPDATE … FROM in 3.33); older libraries go one by one.
_SQLITE_BATCH = sqlite3.sqlite_version_info >= (3, 38, 0)

# One job at a time: any other database, or SQLite without `->>` (before 3.38).
_COMPLETE_ONE = (
    sa.update(jobs)
    .where(
        jobs.c.id == sa.bindparam("job_id", type_=sa.String()),
        jobs.c.lease_owner == sa.bindparam("owner", type_=sa.String()),
        jobs.c.status == _RUNNING,
    )
    .values(
        status=_COMPLETED,
        result=sa.bindparam("result", type_=sa.JSON()),
        finished_at=_NOW,
        updated_at=_NOW,
        lease_owner=None,
        lease_expires_at=None,
        wait_for=None,
    )
)
# The values a completion sets besides its result and times (the same in every statement here).
_CLEARED = "lease_owner = NULL, lease_expires_at = NULL, wait_for = NULL"
# A job's next seq, computed where its event is inserted (one run writes a job's events at a time,
# and its buffered events were inserted earlier in this transaction).
_NEXT_SEQ = "(SELECT COALESCE(MAX(e.seq), 0) + 1 FROM job_events AS e WHERE e.job_id = {})"

_PG_COMPLETE = sa.text(
    f"WITH done AS (UPDATE jobs SET status = '{_COMPLETED}', result = CAST(u.result AS JSON), "
    f"finished_at = u.now, updated_at = u.now, {_CLEARED} "
    "FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:owners AS VARCHAR[]), CAST(:results AS TEXT[]), "
    "CAST(:nows AS DOUBLE PRECISION[])) AS u(id, owner, result, now) "
    f"WHERE jobs.id = u.id AND jobs.lease_owner = u.owner AND jobs.status = '{_RUNNING}' "
    "RETURNING jobs.id, u.owner, jobs.parent_id), "
    "appended AS (INSERT INTO job_events (job_id, seq, kind, step, ts, data) "
    f"SELECT done.id, {_NEXT_SEQ.format('done.id')}, 'job.completed', NULL, "
    "CAST(:ts AS DOUBLE PRECISION), CAST('{}' AS JSON) FROM done) "
    "SELECT id, owner, parent_id FROM done"
)
# items: a JSON array of [id, owner, result, now], at most one per (id, owner).
_SQLITE_OURS = sa.text(
    "SELECT json_group_array(json_array(jobs.id, jobs.lease_owner, jobs.parent_id)) "
    "FROM json_each(:items) AS u "
    "CROSS JOIN jobs ON jobs.id = u.value ->> '$[0]' AND jobs.lease_owner = u.value ->> '$[1]' "
    f"WHERE jobs.status = '{_RUNNING}'"
)
_SQLITE_COMPLETE = sa.text(
    f"UPDATE jobs SET status = '{_COMPLETED}', result = u.value -> '$[2]', "
    f"finished_at = u.value ->> '$[3]', updated_at = u.value ->> '$[3]', {_CLEARED} "
    "FROM json_each(:items) AS u "
    "WHERE jobs.id = u.value ->> '$[0]' AND jobs.lease_owner = u.value ->> '$[1]' "
    f"AND jobs.status = '{_RUNNING}'"
)
_SQLITE_EVENTS = sa.text(
    "INSERT INTO job_events (job_id, seq, kind, step, ts, data) "
    f"SELECT j.value, {_NEXT_SEQ.format('j.value')}, 'job.completed', NULL, :ts, '{{}}' "
    "FROM json_each(:ids) AS j"
)

_Done = dict[tuple[str, str], bool]  # (job id, owner) -> whether the job has a parent: completed


class Completion:
    """`JobQueue.complete`'s transaction for one job; `run_batch` runs many in one go."""

    __slots__ = ("job_id", "now", "result", "worker_id")

    def __init__(self, job_id: str, worker_id: str, result: dict[str, Any], now: float) -> None:
        self.job_id = job_id
        self.worker_id = worker_id
        self.result = result
        self.now = now

    async def __call__(self, conn: AsyncConnection) -> bool:
        return (await Completion.run_batch(conn, [self]))[0]

    @staticmethod
    async def run_batch(conn: AsyncConnection, batch: Sequence[Completion]) -> list[bool]:
        """Each completion's outcome, in order, as if run one after the other in `conn`."""
        firsts: dict[tuple[str, str], int] = {}  # (job, owner) -> its first completion in the batch
        for i, c in enumerate(batch):
            firsts.setdefault((c.job_id, c.worker_id), i)
        unique = [batch[i] for i in firsts.values()]
        dialect = conn.dialect.name
        if dialect == "postgresql":
            done = await _complete_pg(conn, unique)
        elif dialect == "sqlite" and _SQLITE_BATCH:
            done = await _complete_sqlite(conn, unique)
        else:
            done = await _complete_each(conn, unique)
        completed = {firsts[key] for key in done}
        parents = [job_id for (job_id, _), has_parent in done.items() if has_parent]
        if parents:
            await wake_parents(conn, parents, max(c.now for c in unique))
        return [i in completed for i in range(len(batch))]


async def _complete_pg(conn: AsyncConnection, batch: list[Completion]) -> _Done:
    params = {
        "ids": [c.job_id for c in batch],
        "owners": [c.worker_id for c in batch],
        "results": [fastjson.dumps(c.result) for c in batch],
        "nows": [c.now for c in batch],
        "ts": time.time(),
    }
    rows = await conn.execute(_PG_COMPLETE, params)
    return {(job_id, owner): parent is not None for job_id, owner, parent in rows}


async def _complete_sqlite(conn: AsyncConnection, batch: list[Completion]) -> _Done:
    # Packed as one JSON value each way: a RETURNING steps once per row (see store.bulk).
    items = fastjson.dumps([[c.job_id, c.worker_id, c.result, c.now] for c in batch])
    ours = fastjson.loads(await text_scalar(conn, _SQLITE_OURS, {"items": items}) or "[]")
    if not ours:
        return {}
    await text_execute(conn, _SQLITE_COMPLETE, {"items": items})
    ids = [job_id for job_id, _, _ in ours]
    await text_execute(conn, _SQLITE_EVENTS, {"ids": fastjson.dumps(ids), "ts": time.time()})
    return {(job_id, owner): parent is not None for job_id, owner, parent in ours}


async def _complete_each(conn: AsyncConnection, batch: list[Completion]) -> _Done:
    from storyloom.jobs.queue import append_event  # the queue imports this module

    done: _Done = {}
    for c in batch:
        params = {"job_id": c.job_id, "owner": c.worker_id, "now": c.now, "result": c.result}
        if (await conn.execute(_COMPLETE_ONE, params)).rowcount:
            await append_event(conn, c.job_id, "job.completed", {})
            done[(c.job_id, c.worker_id)] = True  # wake_parents looks for the parent itself
    return done
