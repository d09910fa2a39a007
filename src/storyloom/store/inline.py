"""`InlineEngine`: SQLite through the stdlib driver, run right where it is awaited.

Why: through aiosqlite every statement is a trip to the connection's own thread and back (a queue,
a future, a loop wake-up and two GIL hand-overs) plus SQLAlchemy's greenlet bridge, for statements
that take microseconds. Profiled at 200 concurrent chapter jobs, that machinery was a third of a
worker's CPU and a sixth of the API's. SQLite statements are short and never wait for the network,
so the store runs them synchronously: on the write thread, on the read thread, and for the reads a
loop makes (`Database.read()`, `read_lane()`), inline on that loop.

The engine and its connections offer exactly what the store's code uses of SQLAlchemy's async API
(`connect()`, `begin()`, `execute`, `scalar`, `scalars`, `dialect`, `dispose()`, `pool`), so a
transaction function does not know which engine runs it (PostgreSQL keeps asyncpg). A connection
is never held across a suspension inside the store, but callers may hold one across their own
awaits; the pool therefore never blocks (unbounded overflow), because a blocking checkout on a loop
would wait for a release that only that loop can make.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "InlineConnection",
    "InlineEngine",
    "driver_begin",
    "reused_connections",
    "text_execute",
    "text_scalar",
]


class InlineConnection:
    """The `AsyncConnection` methods the store uses, on a synchronous `sa.Connection`."""

    __slots__ = ("dialect", "sync_connection")

    def __init__(self, sync_connection: sa.Connection) -> None:
        self.sync_connection = sync_connection
        self.dialect = sync_connection.dialect

    async def execute(
        self, statement: Any, parameters: Any = None, *, execution_options: Mapping[str, Any] | None = None
    ) -> sa.CursorResult[Any]:
        return self.sync_connection.execute(statement, parameters, execution_options=execution_options)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync_connection.scalar(statement, parameters)

    async def scalars(self, statement: Any, parameters: Any = None) -> sa.ScalarResult[Any]:
        return self.sync_connection.scalars(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> sa.CursorResult[Any]:
        return self.sync_connection.exec_driver_sql(statement, parameters)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        """Commit on a clean exit, roll back on an error (as `AsyncConnection.begin`)."""
        with self.sync_connection.begin():
            yield self

    def driver_cursor(self, statement: sa.TextClause, parameters: Mapping[str, Any]) -> sqlite3.Cursor | None:
        """`statement` run by sqlite3 itself, or None where SQLAlchemy must run it (see `text_scalar`).

        Outside a transaction only a SELECT goes this way (as one autocommit statement, a snapshot
        of its own): anything else would commit at once where SQLAlchemy's autobegin would not."""
        plain = _driver_sql(statement)
        if plain is None:
            return None
        sql, is_select = plain
        conn = self.sync_connection
        if not is_select and not conn.in_transaction():
            return None
        raw = conn.connection.driver_connection
        if not isinstance(raw, sqlite3.Connection):
            return None
        try:
            return raw.execute(sql, parameters)
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, parameters, exc, sqlite3.Error) from exc


class InlineEngine:
    """A synchronous engine behind `AsyncEngine.connect()` / `dispose()`."""

    __slots__ = ("_held", "_held_busy", "sync_engine")

    def __init__(self, sync_engine: sa.Engine) -> None:
        self.sync_engine = sync_engine
        self._held: sa.Connection | None = None
        self._held_busy = False

    @property
    def pool(self) -> sa.Pool:
        return self.sync_engine.pool

    @property
    def dialect(self) -> sa.Dialect:
        return self.sync_engine.dialect

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[InlineConnection]:
        with self.sync_engine.connect() as conn:
            yield InlineConnection(conn)

    @asynccontextmanager
    async def connect_held(self) -> AsyncIterator[InlineConnection]:
        """`connect()` for a frequent user (the event hub's polls, ~100 a second; the write thread's
        batches): one connection kept from use to use, its transaction ended after each (so no WAL
        snapshot stays pinned), instead of a pool checkout, a `Connection` built and closed each
        time (a tenth of the API's CPU at 200 streams). A use that overlaps another one gets a
        connection of its own."""
        if self._held_busy:
            async with self.connect() as own:
                yield own
            return
        self._held_busy = True
        try:
            conn = self._held
            if conn is None or conn.closed or conn.invalidated:
                conn = self._held = self.sync_engine.connect()
            try:
                yield InlineConnection(conn)
            finally:
                try:
                    conn.rollback()  # a read's implicit transaction; nothing to undo
                except BaseException:
                    self._held = None
                    conn.close()
                    raise
        finally:
            self._held_busy = False

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        with self.sync_engine.connect() as conn, conn.begin():
            yield InlineConnection(conn)

    async def dispose(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()
        self.sync_engine.dispose()


def reused_connections(engine: Any) -> Callable[[], AbstractAsyncContextManager[Any]]:
    """`engine.connect` for a reader or writer that uses connections one at a time, over and over
    (the write thread, the hub's lane): on an InlineEngine its one kept
    connection (`connect_held`), elsewhere (asyncpg) the pool as usual."""
    if isinstance(engine, InlineEngine):
        return engine.connect_held
    connect: Callable[[], AbstractAsyncContextManager[Any]] = engine.connect
    return connect


# Why the hot statements bypass SQLAlchemy here: each `execute` through a Connection builds an
# execution context, looks up its compiled cache, fires events and wraps a result, ~40 µs against
# ~3 µs for sqlite3 running the same text (measured on a one-row read). On SQLite that overhead was
# most of the event hub's poll (a fifth of the API at 200 streams) and a share of every write batch.
# Only fixed `text()` statements whose parameters need no conversion qualify: sqlite3 binds
# `:name` itself, so the SQL runs exactly as written.
_DRIVER_SQL: weakref.WeakKeyDictionary[sa.TextClause, tuple[str, bool] | None] = weakref.WeakKeyDictionary()


def _driver_sql(statement: sa.TextClause) -> tuple[str, bool] | None:
    """The statement's SQL and whether it is a SELECT, or None if sqlite3 cannot run it as written."""
    try:
        return _DRIVER_SQL[statement]
    except KeyError:
        pass
    plain = all(
        isinstance(b.type, sa.types.NullType) and not b.expanding for b in statement._bindparams.values()
    )
    sql = statement.text
    found = (sql, sql.lstrip()[:6].upper() == "SELECT") if plain and "\\:" not in sql else None
    _DRIVER_SQL[statement] = found
    return found


async def text_scalar(
    conn: AsyncConnection | InlineConnection, statement: sa.TextClause, parameters: Mapping[str, Any]
) -> Any:
    """`conn.scalar(statement, parameters)`, run by sqlite3 directly on an inline connection."""
    if isinstance(conn, InlineConnection):
        cursor = conn.driver_cursor(statement, parameters)
        if cursor is not None:
            row = cursor.fetchone()
            cursor.close()
            return None if row is None else row[0]
    return await conn.scalar(statement, parameters)


async def text_execute(
    conn: AsyncConnection | InlineConnection, statement: sa.TextClause, parameters: Mapping[str, Any]
) -> None:
    """`conn.execute(statement, parameters)` whose result nobody reads (a write in a transaction)."""
    if isinstance(conn, InlineConnection):
        cursor = conn.driver_cursor(statement, parameters)
        if cursor is not None:
            cursor.close()
            return
    await conn.execute(statement, parameters)


def driver_begin(conn: sa.Connection, begin: str) -> None:
    """Emit `begin` (SQLite's BEGIN [IMMEDIATE]) on the driver's connection from SQLAlchemy's
    "begin" event, without a statement's trip through SQLAlchemy (see `_DRIVER_SQL`); a failure
    surfaces as SQLAlchemy's error, as `exec_driver_sql` would raise it."""
    raw = conn.connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):
        conn.exec_driver_sql(begin)
        return
    try:
        raw.execute(begin)
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(begin, None, exc, sqlite3.Error) from exc
