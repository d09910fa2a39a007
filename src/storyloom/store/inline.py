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

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import sqlalchemy as sa

__all__ = ["InlineConnection", "InlineEngine", "reused_connections"]


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
