"""`Database`: one async handle over SQLite (aiosqlite, WAL) or PostgreSQL (asyncpg).

SQLite allows one writer at a time. Instead of letting many coroutines fight over the file lock
(and get `database is locked`), the service writes through `transaction(fn)`: `fn` runs on the
process's write thread, batched with other transactions into one `BEGIN IMMEDIATE` commit, and the
write threads of all processes take turns by `flock` (see `store.writes` for why and how). Reads
use a separate small pool and never block on writers (WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storyloom import fastjson
from storyloom.errors import ConfigError, StoreError
from storyloom.store.inline import InlineEngine, driver_begin, reused_connections
from storyloom.store.reads import ReadThread
from storyloom.store.writes import Transaction, WriteThread

if TYPE_CHECKING:
    from storyloom.store.migrate import AppMigrations

__all__ = ["Database"]

_MIGRATION_LOCK_ID = 7_714_202_611  # pg advisory lock key for migrations (any constant)
T = TypeVar("T")


class Database:
    """Engines plus the dialect-specific bits the queries need. Create with `from_url`."""

    def __init__(
        self,
        url: str,
        *,
        write_engine: AsyncEngine,
        read_engine: AsyncEngine,
        thread_engine: Callable[[], AsyncEngine] | None = None,
        lock_path: str | None = None,
        lane_engine: Callable[[], AsyncEngine] | None = None,
    ) -> None:
        self.url = url
        self._write = write_engine
        self._read = read_engine
        self.dialect: str = write_engine.dialect.name
        self._closed = False
        self._thread_engine = thread_engine or (lambda: write_engine)
        self._writes: WriteThread | None = None
        self._lock_path = lock_path  # SQLite: the file the write threads of all processes flock
        self._writes_lock = threading.Lock()
        self._commit_listeners: list[Callable[[], None]] = []
        self._lane_engine = lane_engine
        self._lanes: list[AsyncEngine] = []
        self._reads: ReadThread | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10, busy_timeout_ms: int = 30_000) -> Database:
        """`sqlite+aiosqlite:///path/file.db` or `postgresql+asyncpg://user@host:port/db`."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigError(f"the database URL {url!r} is not a valid SQLAlchemy URL.") from exc
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            if parsed.drivername != "sqlite+aiosqlite":
                parsed = parsed.set(drivername="sqlite+aiosqlite")
            path = parsed.database
            if not path or path == ":memory:":
                raise ConfigError("the SQLite database must be a file (sqlite+aiosqlite:///path/to/file.db).")
            Path(path).parent.mkdir(parents=True, exist_ok=True)

            sync_url = parsed.set(drivername="sqlite")

            def inline(size: int, *, begin: str) -> AsyncEngine:
                # The stdlib driver run where it is awaited (store/inline.py); never a blocking
                # checkout (unbounded overflow: a loop cannot wait for its own release).
                engine = sa.create_engine(
                    sync_url,
                    pool_size=size,
                    max_overflow=-1,
                    json_serializer=_to_json,
                    json_deserializer=_from_json,
                    connect_args={"check_same_thread": False},
                )
                _sqlite_setup(engine, begin=begin, busy_timeout_ms=busy_timeout_ms)
                return cast(AsyncEngine, InlineEngine(engine))

            def startup_writer() -> AsyncEngine:
                # For write() and migrations, on the caller's loop: it holds the lock across awaits.
                engine = create_async_engine(
                    parsed, pool_size=1, max_overflow=0, pool_timeout=300, json_serializer=_to_json
                )
                _sqlite_setup(engine.sync_engine, begin="BEGIN IMMEDIATE", busy_timeout_ms=busy_timeout_ms)
                return engine

            return cls(
                url,
                write_engine=startup_writer(),
                read_engine=inline(max(2, pool_size // 2), begin="BEGIN"),
                thread_engine=lambda: inline(1, begin="BEGIN IMMEDIATE"),  # the write thread's own
                lock_path=f"{path}.writelock",
                lane_engine=lambda: inline(1, begin="BEGIN"),
            )
        if backend == "postgresql":
            if parsed.drivername != "postgresql+asyncpg":
                parsed = parsed.set(drivername="postgresql+asyncpg")
            # JSON columns through orjson (storyloom.fastjson), as on SQLite, not the stdlib.
            pg = {"json_serializer": _to_json, "json_deserializer": fastjson.loads}
            engine = create_async_engine(parsed, pool_size=2, max_overflow=pool_size, pool_timeout=120, **pg)
            # Reads run in autocommit: a read is one or a few statements, each with its own snapshot
            # under READ COMMITTED either way, so the BEGIN and ROLLBACK around them were two more
            # round trips per read (on a busy loop, each a wait for its turn) and left the
            # connection "idle in transaction" while its holder awaited something else.
            reads = create_async_engine(
                parsed, pool_size=pool_size, max_overflow=pool_size, pool_timeout=120,
                isolation_level="AUTOCOMMIT", **pg,
            )  # fmt: skip

            def pg_writer() -> AsyncEngine:  # asyncpg connections belong to the loop that opened them
                return create_async_engine(
                    parsed, pool_size=max(2, pool_size // 2), max_overflow=pool_size, pool_timeout=120, **pg
                )

            def lane() -> AsyncEngine:
                return create_async_engine(
                    parsed, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT", **pg
                )

            return cls(url, write_engine=engine, read_engine=reads, thread_engine=pg_writer, lane_engine=lane)
        raise ConfigError(
            f"unsupported database {backend!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://."
        )

    async def transaction(self, fn: Transaction[T]) -> T:
        """Run `fn(conn)` in one write transaction on the write thread; its result, or its error.

        `fn` runs on another thread and loop: it may only use `conn` and plain values, not the
        caller's asyncio objects. A caller cancelled before `fn` started skips it; once started it
        runs to its end (and commits). Database errors become `StoreError`.
        """
        return await asyncio.wrap_future(self._write_thread().submit(fn))

    async def execute(self, stmt: Any) -> list[Any]:
        """One statement in a write transaction of its own; its rows ([] if it returns none)."""

        async def tx(conn: AsyncConnection) -> list[Any]:
            result = await conn.execute(stmt)
            return list(result.all()) if result.returns_rows else []

        return await self.transaction(tx)

    def transaction_blocking(self, fn: Transaction[T]) -> T:
        """`transaction` for plain threads (the group-commit writer): blocks until committed."""
        return self._write_thread().submit(fn).result()

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every commit of this process's writes, on the write thread.

        Workers use it to wake the API's event hubs (see `jobs.wake`) instead of waiting for a poll.
        It must be quick and must not raise.
        """
        self._commit_listeners.append(listener)

    def _write_thread(self) -> WriteThread:
        if self._closed:
            raise StoreError("the database is closed.")
        with self._writes_lock:
            if self._writes is None:
                self._writes = WriteThread(
                    self._thread_engine, lock_path=self._lock_path, listeners=self._commit_listeners
                )
            return self._writes

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction on the calling loop, committed on exit (startup, tests).

        It holds SQLite's write lock across the caller's awaits: the service uses `transaction`.
        """
        try:
            async with self._write.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database write failed: {type(exc).__name__}: {exc}") from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only snapshot; never waits for writers."""
        try:
            async with self._read.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database read failed: {type(exc).__name__}: {exc}") from exc

    def read_lane(self) -> Callable[[], AbstractAsyncContextManager[AsyncConnection]]:
        """A `read()` with a connection of its own, for a reader that must never queue.

        The event hub polls through one: when 500 streams open at once, each replaying through
        the shared pool, a poll waiting its turn behind them delayed every live event by ~120 ms.
        """
        engine = self._lane_engine() if self._lane_engine is not None else self._read
        if engine is not self._read:
            self._lanes.append(engine)

        connect = reused_connections(engine)

        @asynccontextmanager
        async def read() -> AsyncIterator[AsyncConnection]:
            try:
                async with connect() as conn:
                    yield conn
            except (SQLAlchemyError, OSError) as exc:
                raise StoreError(f"database read failed: {type(exc).__name__}: {exc}") from exc

        return read

    async def fetch(self, fn: Transaction[T]) -> T:
        """Run `fn(conn)` on a read connection: on SQLite on a read thread, elsewhere as `read()`.

        For a big read that a burst of clients waits on (the event hub's batch of streams opening
        together): through aiosqlite each step of a read is a hand-over back to the caller's loop,
        and on a loop busy with 500 requests each waits behind all of them; on the read thread
        (`store/reads.py`) only the result is handed over. As with `transaction`, `fn` may only use
        `conn` and plain values. Frequent small reads (the hub's polls) are cheaper on a
        `read_lane`. Database errors become `StoreError`.
        """
        if self._closed:
            raise StoreError("the database is closed.")
        try:
            if self._lane_engine is None or not self.is_sqlite:  # asyncpg: no thread to hop from
                async with self.read() as conn:
                    return await fn(conn)
            return await asyncio.wrap_future(self._read_thread().submit(fn))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database read failed: {type(exc).__name__}: {exc}") from exc

    def _read_thread(self) -> ReadThread:
        with self._writes_lock:
            if self._reads is None:
                assert self._lane_engine is not None
                self._reads = ReadThread(self._lane_engine)
            return self._reads

    async def warm_up(self) -> None:
        """Open the read pool's connections now, not in the first burst of requests: on SQLite each
        is a thread, a file and four pragmas (~8 ms on a busy loop)."""
        with contextlib.suppress(StoreError):  # unreachable now: health says so; the pool fills later
            async with AsyncExitStack() as held:
                for _ in range(self._read.pool.size()):  # type: ignore[attr-defined]
                    await held.enter_async_context(self.read())

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which has `on_conflict_do_nothing/do_update` on both databases."""
        return sqlite.insert(table) if self.is_sqlite else postgresql.insert(table)

    async def migrate(self, apps: Sequence[AppMigrations] = ()) -> None:
        """Bring the schema to the newest alembic revision (the engine's, then each app's chain);
        safe when several processes race."""
        from storyloom.store.migrate import upgrade_to_head

        try:
            async with self._write.begin() as conn:
                if not self.is_sqlite:  # SQLite is already serialized by BEGIN IMMEDIATE
                    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
                await conn.run_sync(upgrade_to_head, list(apps))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot migrate the database: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        writes, self._writes = self._writes, None
        if writes is not None:
            await asyncio.to_thread(writes.close)
        await self._write.dispose()
        reads, self._reads = self._reads, None
        if reads is not None:
            await asyncio.to_thread(reads.close)
        for lane in self._lanes:
            await lane.dispose()
        if self._read is not self._write:
            await self._read.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())


def _to_json(value: Any) -> str:
    """Compact, keeps CJK text readable, and never fails a whole batch on one odd value."""
    return fastjson.dumps(value)


def _from_json(value: Any) -> Any:
    """A JSON column's value: SQLite hands back a stored number as a number (numeric affinity)."""
    if isinstance(value, int | float):
        return value
    return fastjson.loads(value)


def _set_wal(cur: Any) -> None:
    """`PRAGMA journal_mode=WAL`, retried: on a new file that several processes open at once, SQLite
    answers "database is locked" at once, without waiting out busy_timeout (seen racing migrations).
    Only the first connections to a new file can meet this, so the short blocking wait is harmless.
    """
    for attempt in range(100):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.02)


def _sqlite_setup(engine: sa.Engine, *, begin: str, busy_timeout_ms: int) -> None:
    """WAL + busy_timeout on every connection; we emit BEGIN ourselves (pysqlite's is unusable)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        _set_wal(cur)
        # NORMAL in WAL mode survives process crashes (what workers do); only power loss can lose
        # the last commits, the usual trade for thousands of commits per second.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        driver_begin(conn, begin)
