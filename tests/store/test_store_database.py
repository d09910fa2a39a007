"""Database setup and migrations on SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from storyloom.errors import ConfigError, StoreError
from storyloom.store import Database
from storyloom.store.schema import metadata


def _diff(conn: sa.Connection, declared: sa.MetaData) -> list[object]:
    """What the database lacks or has extra against `declared`, over `declared`'s tables only."""
    names = set(declared.tables)
    ctx = MigrationContext.configure(
        conn,
        opts={"include_name": lambda name, type_, _: type_ != "table" or name in names},
    )
    return list(compare_metadata(ctx, declared))


async def test_racing_migrations_leave_exactly_the_declared_schema(db_url: str) -> None:
    import storyloom.apps.novel.book.tables  # noqa: F401  (the book runner's tables, same metadata)
    from storyloom.apps.novel.tables import metadata as novel_metadata
    from storyloom.registry import AppRegistry

    apps = AppRegistry.discover().migrations()
    dbs = [Database.from_url(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(d.migrate(apps) for d in dbs))
        await dbs[0].migrate(apps)  # idempotent
        await dbs[1].migrate()  # a process that loads no app still migrates the engine's tables
        async with dbs[0].write() as conn:
            core = await conn.run_sync(_diff, metadata)
            novel = await conn.run_sync(_diff, novel_metadata)
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            novel_version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version_novel"))
        assert core == []  # the engine's chain creates exactly store/schema.py
        assert novel == []  # the novel's own chain creates exactly its tables
        assert version == "0006" and novel_version == "novel_0010"
    finally:
        for d in dbs:
            await d.close()


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        async with db.read() as conn:
            assert (await conn.scalar(sa.text("PRAGMA journal_mode"))) == "wal"
            assert int(await conn.scalar(sa.text("PRAGMA busy_timeout")) or 0) >= 1000
    finally:
        await db.close()


def test_bad_urls_are_clear_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a valid"):
        Database.from_url("::nonsense::")
    with pytest.raises(ConfigError, match="must be a file"):
        Database.from_url("sqlite+aiosqlite://")
    with pytest.raises(ConfigError, match="unsupported database"):
        Database.from_url("mysql://u@h/db")


async def test_database_errors_become_store_errors(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    try:
        with pytest.raises(StoreError, match="no such table"):
            async with db.read() as conn:
                await conn.execute(sa.text("SELECT * FROM nowhere"))
    finally:
        await db.close()


@pytest.mark.postgres
async def test_postgres_reads_leave_no_transaction_open(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A reader that holds its connection across its own awaits must not hold a transaction too
    (an "idle in transaction" session keeps VACUUM from cleaning up and costs two round trips)."""
    from support.databases import fresh_database_url

    url = await fresh_database_url("postgres", tmp_path, request)
    db = Database.from_url(url, pool_size=2)
    try:
        await db.migrate()
        name = url.rsplit("/", 1)[1]
        probe = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid() "
            "AND state = 'idle in transaction'"
        )
        async with db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
            async with db.read() as other:
                assert await other.scalar(probe, {"db": name}) == 0
        lane = db.read_lane()
        async with lane() as conn:
            await conn.execute(sa.text("SELECT 1"))
            async with db.read() as other:
                assert await other.scalar(probe, {"db": name}) == 0
        async with db.write() as conn:  # writes stay transactions
            await conn.execute(sa.text("SELECT 1"))
            async with db.read() as other:
                assert await other.scalar(probe, {"db": name}) == 1
    finally:
        await db.close()


async def test_a_sqlite_read_lane_keeps_its_connection_and_never_reads_a_stale_snapshot(
    tmp_path: Path,
) -> None:
    """The hub's lane reuses one connection from poll to poll, yet each poll sees what was
    committed since the last one (its read transaction ended), and an overlapping use gets a
    connection of its own."""
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'lane.db'}")
    try:
        await db.migrate()
        async with db.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
        lane = db.read_lane()
        seen: list[object] = []
        for n in range(3):
            async with db.write() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (:n)"), {"n": n})
            async with lane() as conn:
                assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == n + 1
                seen.append(conn.sync_connection)  # type: ignore[attr-defined]
                async with lane() as inner:
                    assert inner.sync_connection is not seen[-1]  # type: ignore[attr-defined]
                    assert await inner.scalar(sa.text("SELECT max(n) FROM t")) == n
        assert seen[0] is seen[1] is seen[2]
        # The write thread keeps its connection too, from batch to batch.
        insert = sa.text("INSERT INTO t VALUES (9)")
        await db.execute(insert)
        writes = db._writes
        assert writes is not None and writes._engine is not None
        held = writes._engine._held  # type: ignore[attr-defined]
        await db.execute(insert)
        assert held is not None and writes._engine._held is held  # type: ignore[attr-defined]
        # No snapshot left pinned: another connection's full checkpoint is not busy.
        with contextlib.closing(sqlite3.connect(tmp_path / "lane.db", timeout=0.5)) as other:
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        await db.close()
