"""Bulk writes of event and checkpoint rows, the group-commit writer's two statements.

On SQLite the rows travel as one JSON array bound to one parameter and are unpacked by `json_each`
inside one `INSERT … SELECT`. The obvious ways cost too much where it hurts, with the database's
write lock held: `executemany` lets the sqlite3 module release and re-take the GIL for every row,
and while a worker's loop thread is busy each re-take waits up to a switch interval (measured:
300 rows took 105 ms against 3 ms on an idle process); a multi-row VALUES statement is compiled
anew for every row count (15 ms idle, 50 ms busy). The JSON form costs one step and one fixed,
cached statement. Postgres (asyncpg) has neither problem and takes plain `executemany`.

On PostgreSQL every statement here is built once (building one and computing SQLAlchemy's cache key
cost more than running it), and a list of ids or jobs travels as one array parameter (`= ANY($1)`,
`unnest`): an `IN (...)` list renders a new SQL text for each length, which asyncpg prepares anew
(a round trip and a server-side plan each) and which pushes the hot statements out of its cache.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom import fastjson
from storyloom.store.database import Database
from storyloom.store.inline import text_execute, text_scalar
from storyloom.store.schema import checkpoints, events, jobs

__all__ = [
    "EventRow",
    "Rows",
    "events_after_id",
    "events_after_seqs",
    "existing_job_ids",
    "insert_events",
    "insert_jobs",
    "job_events_after",
    "jobs_by_ids",
    "upsert_checkpoints",
]

# `->` and `->>` arrived in SQLite 3.38 (2022); older libraries take the portable path.
_SQLITE_JSON_ARROWS = sqlite3.sqlite_version_info >= (3, 38, 0)

_SQLITE_EVENTS = sa.text(
    "INSERT INTO job_events (job_id, seq, kind, step, ts, data) "
    "SELECT value ->> '$.job_id', value ->> '$.seq', value ->> '$.kind', value ->> '$.step', "
    "value ->> '$.ts', value -> '$.data' FROM json_each(:rows) WHERE true "
    "ON CONFLICT (job_id, seq) DO NOTHING"
)
_SQLITE_CHECKPOINTS = sa.text(
    "INSERT INTO job_checkpoints (run_id, step, value, created_at) "
    "SELECT value ->> '$.run_id', value ->> '$.step', value -> '$.value', value ->> '$.created_at' "
    "FROM json_each(:rows) WHERE true "
    "ON CONFLICT (run_id, step) DO UPDATE SET value = excluded.value, created_at = excluded.created_at"
)

# A new job's columns; the rest (result, error, lease, start and finish times) start NULL.
JOB_COLUMNS = (
    "id", "kind", "status", "priority", "tenant", "payload", "idempotency_key", "parent_id",
    "depends_on", "attempts", "max_attempts", "run_at", "created_at", "updated_at", "cancel_requested",
)  # fmt: skip
_JSON_COLUMNS = frozenset({"payload"})
_SQLITE_JOBS = sa.text(
    "INSERT INTO jobs ({}) SELECT {} FROM json_each(:rows) WHERE true "
    "ON CONFLICT (tenant, idempotency_key) DO NOTHING".format(
        ", ".join(JOB_COLUMNS),
        ", ".join(f"value {'->' if c in _JSON_COLUMNS else '->>'} '$.{c}'" for c in JOB_COLUMNS),
    )
)
_SQLITE_EXISTING_JOBS = sa.text(
    "SELECT json_group_array(id) FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))"
)
_PG_IDS = sa.bindparam("ids", type_=postgresql.ARRAY(sa.String()))
_PG_EXISTING_JOBS = sa.select(jobs.c.id).where(jobs.c.id == sa.any_(_PG_IDS))
_PG_JOBS_BY_IDS = sa.select(jobs).where(jobs.c.id == sa.any_(_PG_IDS))


_Unnested = tuple[sa.TextClause, Callable[[list[dict[str, Any]]], dict[str, list[Any]]]]


# PostgreSQL: a batch of rows as one array per column, unnested by one INSERT … SELECT. asyncpg's
# `executemany` sends them in one round trip, but the server still executes the INSERT once per row
# (plan, locks, its own trip through the executor): at a few hundred events per commit that was
# most of the server's CPU per no-op job. WITH ORDINALITY keeps the rows' order, so the events'
# ids follow it as they did.
def _pg_unnest(table: sa.Table, names: Sequence[str], conflict: str) -> _Unnested:
    """The statement, and a function from rows to its parameters (JSON columns as text)."""
    pg = postgresql.dialect()  # type: ignore[no-untyped-call]
    cols = [table.c[n] for n in names]
    json_cols = {c.name for c in cols if isinstance(c.type, sa.JSON)}
    floats = {c.name for c in cols if isinstance(c.type, sa.Double)}
    # No lengths in the arrays' types: a cast to VARCHAR(n) truncates, the column itself refuses.
    types = {
        c.name: "TEXT" if c.name in json_cols else c.type.compile(dialect=pg).split("(")[0] for c in cols
    }
    arrays = ", ".join(f"CAST(:{n} AS {types[n]}[])" for n in names)
    picked = ", ".join(f"CAST(u.{n} AS JSON)" if n in json_cols else f"u.{n}" for n in names)
    stmt = sa.text(
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {picked} "
        f"FROM unnest({arrays}) WITH ORDINALITY AS u({', '.join(names)}, ord) ORDER BY u.ord {conflict}"
    )

    def params(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for n in names:
            values = [row[n] for row in rows]
            if n in json_cols:
                values = [fastjson.dumps(v) for v in values]
            elif n in floats:
                values = [None if v is None else float(v) for v in values]
            out[n] = values
        return out

    return stmt, params


_PG_EVENTS = _pg_unnest(
    events, ("job_id", "seq", "kind", "step", "ts", "data"), "ON CONFLICT (job_id, seq) DO NOTHING"
)
_PG_CHECKPOINTS = _pg_unnest(
    checkpoints,
    ("run_id", "step", "value", "created_at"),
    "ON CONFLICT (run_id, step) DO UPDATE SET value = excluded.value, created_at = excluded.created_at",
)


# RETURNING: the ids it inserted (`insert_jobs`), so the intake needs no look-up afterwards.
_PG_JOBS = _pg_unnest(jobs, JOB_COLUMNS, "ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING id")


class Rows:
    """Rows to write, packed for SQLite ahead of time: serializing a batch of chapter texts takes
    milliseconds that should not be spent holding the write lock."""

    __slots__ = ("packed", "rows")

    def __init__(self, db: Database, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.packed = fastjson.dumps(rows) if rows and db.is_sqlite and _SQLITE_JSON_ARROWS else None


def _events_insert(db: Database) -> Any:
    return db.insert(events).on_conflict_do_nothing(index_elements=["job_id", "seq"])


def _checkpoints_upsert(db: Database) -> Any:
    ins = db.insert(checkpoints)
    return ins.on_conflict_do_update(
        index_elements=["run_id", "step"],
        set_={"value": ins.excluded.value, "created_at": ins.excluded.created_at},
    )


def _jobs_insert(db: Database) -> Any:
    return db.insert(jobs).on_conflict_do_nothing(index_elements=["tenant", "idempotency_key"])


async def insert_events(db: Database, conn: AsyncConnection, rows: Rows) -> None:
    """Append event rows in order; a (job_id, seq) already stored is kept (the first write wins)."""
    await _write(db, conn, rows, _SQLITE_EVENTS, _events_insert, _PG_EVENTS)


async def upsert_checkpoints(db: Database, conn: AsyncConnection, rows: Rows) -> None:
    """Store step results; a re-run's result replaces the earlier one. Keys must be unique in `rows`."""
    await _write(db, conn, rows, _SQLITE_CHECKPOINTS, _checkpoints_upsert, _PG_CHECKPOINTS)


async def insert_jobs(db: Database, conn: AsyncConnection, rows: Rows) -> set[str] | None:
    """Insert new jobs (`JOB_COLUMNS`); one whose (tenant, idempotency_key) exists is skipped.

    The ids it inserted where the database says so in the same statement (PostgreSQL), else None:
    then `existing_job_ids` tells."""
    if rows.rows and rows.packed is None and conn.dialect.name == "postgresql":
        stmt, params = _PG_JOBS
        return set((await conn.scalars(stmt, params(rows.rows))).all())
    await _write(db, conn, rows, _SQLITE_JOBS, _jobs_insert)
    return None


# The portable statements, built once per (dialect, builder): see the module's docstring.
_BUILT: dict[tuple[str, Callable[[Database], Any]], Any] = {}


async def _write(
    db: Database,
    conn: AsyncConnection,
    rows: Rows,
    packed: Any,
    portable: Callable[[Database], Any],
    unnested: _Unnested | None = None,
) -> None:
    """The packed statement on SQLite, the `unnested` one on PostgreSQL, else `portable(db)` as an
    executemany (built once)."""
    if not rows.rows:
        return
    if rows.packed is not None:
        await text_execute(conn, packed, {"rows": rows.packed})
        return
    if unnested is not None and conn.dialect.name == "postgresql":
        await conn.execute(unnested[0], unnested[1](rows.rows))
        return
    stmt = _BUILT.get((db.dialect, portable))
    if stmt is None:
        stmt = _BUILT[(db.dialect, portable)] = portable(db)
    await conn.execute(stmt, rows.rows)


async def existing_job_ids(conn: AsyncConnection, ids: list[str]) -> set[str]:
    """Which of `ids` are stored (after `insert_jobs`: the ones it inserted)."""
    if not ids:
        return set()
    if conn.dialect.name == "sqlite" and _SQLITE_JSON_ARROWS:
        found = await conn.scalar(_SQLITE_EXISTING_JOBS, {"ids": fastjson.dumps(ids)})
        return set(fastjson.loads(found or "[]"))
    if conn.dialect.name == "postgresql":
        return set((await conn.scalars(_PG_EXISTING_JOBS, {"ids": ids})).all())
    return {r[0] for r in await conn.execute(sa.select(jobs.c.id).where(jobs.c.id.in_(ids)))}


def _sqlite_job_field(column: sa.Column[Any]) -> str:
    name = column.name
    if isinstance(column.type, sa.JSON):
        return f"'{name}', json({name})"
    if isinstance(column.type, sa.Double):  # as text with 6 decimals, like events' ts
        return f"'{name}', CASE WHEN {name} IS NULL THEN NULL ELSE printf('%.6f', {name}) END"
    return f"'{name}', {name}"


_SQLITE_JOBS_BY_IDS = sa.text(
    "SELECT json_group_array(json_object({})) FROM jobs "
    "WHERE id IN (SELECT value FROM json_each(:ids))".format(", ".join(map(_sqlite_job_field, jobs.columns)))
)
_JOB_TIMES = frozenset(c.name for c in jobs.columns if isinstance(c.type, sa.Double))


async def jobs_by_ids(conn: AsyncConnection, ids: list[str]) -> list[dict[str, Any]]:
    """The rows of the jobs among `ids` that exist, as column -> value mappings (any order)."""
    if not ids:
        return []
    if conn.dialect.name == "sqlite" and _SQLITE_JSON_ARROWS:
        packed = fastjson.loads(await conn.scalar(_SQLITE_JOBS_BY_IDS, {"ids": fastjson.dumps(ids)}) or "[]")
        for row in packed:
            for name in _JOB_TIMES:
                if row[name] is not None:
                    row[name] = float(row[name])
        return list(packed)
    if conn.dialect.name == "postgresql":
        return [dict(r._mapping) for r in await conn.execute(_PG_JOBS_BY_IDS, {"ids": ids})]
    return [dict(r._mapping) for r in await conn.execute(sa.select(jobs).where(jobs.c.id.in_(ids)))]


EventRow = tuple[int, str, int, str, "str | None", float, Any]  # id job_id seq kind step ts data
_EVENT_COLUMNS = (
    events.c.id,
    events.c.job_id,
    events.c.seq,
    events.c.kind,
    events.c.step,
    events.c.ts,
    events.c.data,
)

# On SQLite the rows come back as one JSON array (`json_group_array`), for the same reason as the
# writes: reading N rows steps N times, each re-taking the GIL from a busy event loop, and the
# API's event hub reads every new event. `ts` crosses as text with 6 decimals (a JSON number would
# keep 15 significant digits). Fixed statement texts: building a subquery per poll cost more than
# running it.
_SQLITE_PACKED = (
    "SELECT json_group_array(json_array(id, job_id, seq, kind, step, printf('%.6f', ts), json(data))) "
    "FROM (SELECT id, job_id, seq, kind, step, ts, data FROM job_events WHERE {where} LIMIT :limit)"
)
_SQLITE_AFTER_ID = sa.text(_SQLITE_PACKED.format(where="id > :after ORDER BY id"))
_SQLITE_JOB_AFTER_SEQ = sa.text(_SQLITE_PACKED.format(where="job_id = :job_id AND seq > :after ORDER BY seq"))


# PostgreSQL: the hub's poll (with the ids it missed, see jobs/events.py) and a job's replay.
_AFTER: sa.BindParameter[int] = sa.bindparam("after", type_=sa.BigInteger())
_LIMIT: sa.BindParameter[int] = sa.bindparam("limit", type_=sa.Integer())
_PG_AFTER_ID = sa.select(*_EVENT_COLUMNS).where(events.c.id > _AFTER).order_by(events.c.id).limit(_LIMIT)
_PG_AFTER_ID_OR_HOLES = (
    sa.select(*_EVENT_COLUMNS)
    .where(
        sa.or_(
            events.c.id > _AFTER,
            events.c.id == sa.any_(sa.bindparam("holes", type_=postgresql.ARRAY(sa.BigInteger()))),
        )
    )
    .order_by(events.c.id)
    .limit(_LIMIT)
)
_PG_JOB_AFTER_SEQ = (
    sa.select(*_EVENT_COLUMNS)
    .where(events.c.job_id == sa.bindparam("job_id", type_=sa.String()), events.c.seq > _AFTER)
    .order_by(events.c.seq)
    .limit(_LIMIT)
)
# Several jobs' replays in one statement: each job an index range of its own (LATERAL).
_PG_JOBS_AFTER_SEQS = sa.text(
    "SELECT e.id, e.job_id, e.seq, e.kind, e.step, e.ts, e.data "
    "FROM unnest(CAST(:job_ids AS VARCHAR[]), CAST(:seqs AS INTEGER[])) AS p(job_id, after_seq) "
    "CROSS JOIN LATERAL (SELECT id, job_id, seq, kind, step, ts, data FROM job_events "
    "WHERE job_id = p.job_id AND seq > p.after_seq ORDER BY seq LIMIT :limit) AS e"
)


async def events_after_id(
    conn: AsyncConnection, after_id: int, limit: int, *, also_ids: Sequence[int] = ()
) -> list[EventRow]:
    """Every job's events with id > `after_id` (and those in `also_ids`), in id order, at most `limit`."""
    if conn.dialect.name == "sqlite" and not also_ids:
        return await _sqlite_packed(conn, _SQLITE_AFTER_ID, {"after": after_id, "limit": limit}, key=0)
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {"after": after_id, "limit": limit}
        if also_ids:
            params["holes"] = list(also_ids)
        stmt = _PG_AFTER_ID_OR_HOLES if also_ids else _PG_AFTER_ID
        return [_row(r) for r in await conn.execute(stmt, params)]
    cond = events.c.id > after_id
    if also_ids:
        cond = sa.or_(cond, events.c.id.in_(list(also_ids)))
    query = sa.select(*_EVENT_COLUMNS).where(cond).order_by(events.c.id).limit(limit)
    return [_row(r) for r in await conn.execute(query)]


async def job_events_after(conn: AsyncConnection, job_id: str, after_seq: int, limit: int) -> list[EventRow]:
    """One job's events with seq > `after_seq`, in seq order, at most `limit`."""
    if conn.dialect.name == "sqlite":
        params = {"job_id": job_id, "after": after_seq, "limit": limit}
        return await _sqlite_packed(conn, _SQLITE_JOB_AFTER_SEQ, params, key=2)
    if conn.dialect.name == "postgresql":
        params = {"job_id": job_id, "after": after_seq, "limit": limit}
        return [_row(r) for r in await conn.execute(_PG_JOB_AFTER_SEQ, params)]
    query = (
        sa.select(*_EVENT_COLUMNS)
        .where(events.c.job_id == job_id, events.c.seq > after_seq)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return [_row(r) for r in await conn.execute(query)]


# Several jobs' events at once, each after its own seq: the batched replays of streams that open
# together. CROSS JOIN keeps json_each the outer loop, so each job is one (job_id, seq) index range.
_SQLITE_JOBS_AFTER_SEQS = sa.text(
    "SELECT json_group_array(json_array(id, job_id, seq, kind, step, printf('%.6f', ts), json(data))) "
    "FROM (SELECT e.id, e.job_id, e.seq, e.kind, e.step, e.ts, e.data, "
    "row_number() OVER (PARTITION BY e.job_id ORDER BY e.seq) AS n "
    "FROM json_each(:pairs) AS p CROSS JOIN job_events AS e "
    "ON e.job_id = p.value ->> '$[0]' AND e.seq > p.value ->> '$[1]') WHERE n <= :limit"
)


async def events_after_seqs(
    conn: AsyncConnection, after: dict[str, int], limit: int
) -> dict[str, list[EventRow]]:
    """For each job of `after`, its events with seq > after[job], in seq order, at most `limit`."""
    out: dict[str, list[EventRow]] = {job_id: [] for job_id in after}
    if not after:
        return out
    if conn.dialect.name == "sqlite" and _SQLITE_JSON_ARROWS:
        params = {"pairs": fastjson.dumps(list(after.items())), "limit": limit}
        for row in await _sqlite_packed(conn, _SQLITE_JOBS_AFTER_SEQS, params, key=2):
            out[row[1]].append(row)
        return out
    if conn.dialect.name == "postgresql":
        params = {"job_ids": list(after), "seqs": list(after.values()), "limit": limit}
        for r in await conn.execute(_PG_JOBS_AFTER_SEQS, params):
            out[r[1]].append(_row(r))
        for rows in out.values():
            rows.sort(key=lambda row: row[2])  # LATERAL keeps each job's order; said, not assumed
        return out
    for job_id, seq in after.items():
        out[job_id] = await job_events_after(conn, job_id, seq, limit)
    return out


async def _sqlite_packed(
    conn: AsyncConnection, stmt: Any, params: dict[str, Any], *, key: int
) -> list[EventRow]:
    rows = fastjson.loads(await text_scalar(conn, stmt, params) or "[]")
    rows.sort(key=lambda r: r[key])  # an aggregate's order is not promised
    return [(r[0], r[1], r[2], r[3], r[4], float(r[5]), r[6]) for r in rows]


def _row(r: Any) -> EventRow:
    return (int(r[0]), r[1], int(r[2]), r[3], r[4], float(r[5]), r[6])
