"""The write thread: batched transactions, each with its own outcome, independent of the caller's loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.errors import StoreError
from storyloom.store import Database
from storyloom.store.schema import usage


def _insert(tenant: str, **extra: Any) -> Any:
    values = {"ts": time.time(), "tenant": tenant, "model": "m", "prompt_tokens": 1, "completion_tokens": 1}
    return sa.insert(usage).values(**values, **extra)


async def _tenants(db: Database) -> list[str]:
    async with db.read() as conn:
        return sorted(r[0] for r in await conn.execute(sa.select(usage.c.tenant)))


async def test_concurrent_transactions_share_commits(db: Database) -> None:
    await asyncio.gather(*(db.execute(_insert(f"t{i:03}")) for i in range(200)))
    writes = db._write_thread()
    assert writes.transactions == 200
    assert writes.batches <= 40  # without batching: 200 commits
    assert await _tenants(db) == [f"t{i:03}" for i in range(200)]


async def test_a_batch_holds_the_write_lock_no_longer_than_its_cap(db: Database) -> None:
    """Other processes wait for each batch: a queue of slow transactions is cut into short ones."""
    writes = db._write_thread()
    assert writes.max_batch_s <= 0.01

    async def slow(conn: AsyncConnection) -> None:
        await asyncio.sleep(0.004)
        await conn.execute(_insert("slow"))

    before = writes.batches
    await asyncio.gather(*(db.transaction(slow) for _ in range(30)))
    assert writes.batches - before >= 10  # at most 3 of 4 ms fit in 10 ms; uncapped: 1 batch


async def test_a_failing_transaction_does_not_take_its_batch_down(db: Database) -> None:
    async def boom(conn: AsyncConnection) -> None:
        await conn.execute(_insert("doomed"))
        raise ValueError("the caller's own error")

    await db.execute(_insert("first", id=10**9))
    calls = [db.execute(_insert(f"ok{i:02}")) for i in range(30)]
    calls.insert(10, db.transaction(boom))
    calls.insert(20, db.execute(_insert("duplicate", id=10**9)))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 2
    assert isinstance(outcomes[10], ValueError)  # the caller's error, untouched
    assert isinstance(outcomes[20], StoreError) and isinstance(outcomes[20].__cause__, IntegrityError)
    assert await _tenants(db) == ["first", *(f"ok{i:02}" for i in range(30))]


async def test_transactions_commit_while_the_callers_loop_is_blocked(db: Database) -> None:
    """The reason for the thread: a busy caller loop must not hold the write lock or stall commits."""

    async def insert(conn: AsyncConnection) -> None:
        await conn.execute(_insert("while-blocked"))

    # Waiting on the thread's future blocks this loop: the commit must happen without it turning.
    db._write_thread().submit(insert).result(timeout=30)
    other = Database.from_url(db.url)  # another process's view: committed data only
    try:
        assert await _tenants(other) == ["while-blocked"]
    finally:
        await other.close()


async def test_a_transaction_whose_caller_gave_up_before_it_started_is_skipped(db: Database) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def slow(conn: AsyncConnection) -> None:
        loop.call_soon_threadsafe(started.set)
        await asyncio.sleep(0.5)  # on the write thread's loop; the batch closes after this one
        await conn.execute(_insert("slow"))

    first = asyncio.ensure_future(db.transaction(slow))
    await started.wait()
    second = asyncio.ensure_future(db.execute(_insert("abandoned")))
    await asyncio.sleep(0.05)
    second.cancel()
    await first
    await db.execute(_insert("after"))
    assert await _tenants(db) == ["after", "slow"]


async def test_two_processes_writing_one_sqlite_file_never_see_it_locked(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'two.db'}"
    a, b = Database.from_url(url), Database.from_url(url)
    await a.migrate()
    try:
        await asyncio.gather(
            *(a.execute(_insert(f"a{i:03}")) for i in range(150)),
            *(b.execute(_insert(f"b{i:03}")) for i in range(150)),
        )
        assert len(await _tenants(a)) == 300
    finally:
        await a.close()
        await b.close()


async def test_a_closed_database_refuses_writes(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await db.migrate()
    await db.execute(_insert("x"))
    await db.close()
    with pytest.raises(StoreError, match="closed"):
        await db.execute(_insert("y"))
