"""Bulk writes of event and checkpoint rows, the group-commit writer's two statements.

On SQLite the rows travel as one JSON array bound to one parameter and are unpacked by `json_each`
inside one `INSERT … SELECT`. The obvious ways cost too much where it hurts, with the database's
write lock held: `executemany` lets the sqlite3 module release and re-take the GIL for every row,
and while a worker's loop thread is busy each re-take waits up to a switch interval (measured:
300 rows took 105 ms against 3 ms on an idle process); a multi-row VALUES statement is compiled
anew for every row count (15 ms idle, 50 ms busy). The JSON form costs one step and one fixed,
cached statement. Postgres (asyncpg) has neither problem and takes plain `executemany`.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.store.database import Database
from storyloom.store.schema import checkpoints, events

__all__ = ["EventRow", "insert_events", "select_events", "upsert_checkpoints"]

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


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"), default=str)


async def insert_events(db: Database, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Append event rows in order; a (job_id, seq) already stored is kept (the first write wins)."""
    if not rows:
        return
    if db.is_sqlite and _SQLITE_JSON_ARROWS:
        await conn.execute(_SQLITE_EVENTS, {"rows": _json(rows)})
        return
    stmt = db.insert(events).on_conflict_do_nothing(index_elements=["job_id", "seq"])
    await conn.execute(stmt, rows)


async def upsert_checkpoints(db: Database, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Store step results; a re-run's result replaces the earlier one. Keys must be unique in `rows`."""
    if not rows:
        return
    if db.is_sqlite and _SQLITE_JSON_ARROWS:
        await conn.execute(_SQLITE_CHECKPOINTS, {"rows": _json(rows)})
        return
    ins = db.insert(checkpoints)
    upsert = ins.on_conflict_do_update(
        index_elements=["run_id", "step"],
        set_={"value": ins.excluded.value, "created_at": ins.excluded.created_at},
    )
    await conn.execute(upsert, rows)


EventRow = tuple[int, str, int, str, "str | None", float, Any]  # id job_id seq kind step ts data
_EVENT_COLUMNS = (events.c.id, events.c.job_id, events.c.seq, events.c.kind, events.c.step, events.c.ts)


async def select_events(
    conn: AsyncConnection, where: Any, limit: int, *, by_seq: bool = False
) -> list[EventRow]:
    """Event rows matching `where`, in id order (or seq order, for one job's), at most `limit`.

    On SQLite the rows come back as one JSON array (`json_group_array`) for the same reason as the
    writes: reading N rows steps N times, each re-taking the GIL from a busy event loop, and the
    API's event hub reads every new event this way. `ts` crosses as text with 6 decimals (JSON
    would keep only 15 significant digits).
    """
    order = events.c.seq if by_seq else events.c.id
    query = sa.select(*_EVENT_COLUMNS, events.c.data).where(where).order_by(order).limit(limit)
    if conn.dialect.name != "sqlite":
        return [
            (int(r[0]), r[1], int(r[2]), r[3], r[4], float(r[5]), r[6]) for r in await conn.execute(query)
        ]
    inner = query.subquery()
    packed = sa.func.json_array(
        inner.c.id, inner.c.job_id, inner.c.seq, inner.c.kind, inner.c.step,
        sa.func.printf("%.6f", inner.c.ts), sa.func.json(inner.c.data),
    )  # fmt: skip
    text = await conn.scalar(sa.select(sa.func.json_group_array(packed)))
    rows = json.loads(text or "[]")
    rows.sort(key=lambda r: r[2] if by_seq else r[0])  # an aggregate's order is not promised
    return [(r[0], r[1], r[2], r[3], r[4], float(r[5]), r[6]) for r in rows]
