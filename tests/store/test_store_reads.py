"""`Database.fetch`: the latency-critical reads, off the caller's loop on SQLite."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.errors import StoreError
from storyloom.store import Database


async def test_fetch_returns_what_its_function_read(db: Database) -> None:
    async def read(conn: AsyncConnection) -> int:
        return int(await conn.scalar(sa.text("SELECT 40 + 2")) or 0)

    assert await db.fetch(read) == 42
    assert await asyncio.gather(*(db.fetch(read) for _ in range(20))) == [42] * 20


# The thread hand-over is SQLite's (asyncpg reads on the caller's loop).
_SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@_SQLITE_ONLY
async def test_on_sqlite_the_read_runs_on_a_thread_of_its_own(db: Database) -> None:
    where: list[int] = []

    async def read(conn: AsyncConnection) -> None:
        where.append(threading.get_ident())
        await conn.execute(sa.text("SELECT 1"))

    await db.fetch(read)
    await db.fetch(read)
    assert where[0] != threading.get_ident()  # not this loop's thread: one hand-over, not one per step
    assert where[0] == where[1]  # one long-lived thread, not a thread per read


async def test_a_failed_read_is_a_store_error(db: Database) -> None:
    async def bad(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT * FROM no_such_table"))

    with pytest.raises(StoreError, match="database read failed"):
        await db.fetch(bad)


@_SQLITE_ONLY
async def test_a_cancelled_caller_cancels_its_read(db: Database) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def slow(conn: AsyncConnection) -> None:
        started.set()
        try:
            await asyncio.sleep(30)  # on the read thread's loop
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(db.fetch(slow))
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cancelled.wait, 5)  # the read itself was cancelled, not abandoned

    async def read(conn: AsyncConnection) -> int:
        return int(await conn.scalar(sa.text("SELECT 7")) or 0)

    assert await db.fetch(read) == 7  # the thread is still there for the next caller


async def test_fetch_after_close_is_a_store_error(db_url: str) -> None:
    database = Database.from_url(db_url)
    await database.close()

    async def read(conn: AsyncConnection) -> None:
        return None

    with pytest.raises(StoreError, match="closed"):
        await database.fetch(read)
