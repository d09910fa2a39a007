"""The SQLite statements run by sqlite3 directly (store/inline.py): same answers, same transactions
and the same errors as through SQLAlchemy, on a real database file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storyloom.errors import StoreError
from storyloom.store import Database
from storyloom.store.database import _sqlite_setup
from storyloom.store.inline import InlineConnection, InlineEngine, _driver_sql, text_execute, text_scalar

_COUNT = sa.text("SELECT count(*) FROM t WHERE v >= :low")
_INSERT = sa.text("INSERT INTO t (v) VALUES (:v)")


def _engine(path: Path, *, begin: str = "BEGIN IMMEDIATE", busy_timeout_ms: int = 5000) -> InlineEngine:
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
    _sqlite_setup(engine, begin=begin, busy_timeout_ms=busy_timeout_ms)
    return InlineEngine(engine)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[InlineEngine]:
    eng = _engine(tmp_path / "t.db")
    async with eng.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    yield eng
    await eng.dispose()


async def test_a_read_answers_as_sqlalchemy_does_in_and_out_of_a_transaction(engine: InlineEngine) -> None:
    async with engine.begin() as conn:
        await text_execute(conn, _INSERT, {"v": 5})
        await text_execute(conn, _INSERT, {"v": 1})
        assert await text_scalar(conn, _COUNT, {"low": 2}) == 1  # sees its own uncommitted row
    async with engine.connect_held() as conn:
        assert not conn.sync_connection.in_transaction()
        assert await text_scalar(conn, _COUNT, {"low": 0}) == 2
        assert await conn.scalar(_COUNT, {"low": 0}) == 2
        assert await text_scalar(conn, sa.text("SELECT v FROM t WHERE v > :v"), {"v": 99}) is None


async def test_a_write_outside_a_transaction_is_left_to_sqlalchemy_uncommitted(engine: InlineEngine) -> None:
    """sqlite3 in autocommit would commit an INSERT at once; SQLAlchemy's autobegin keeps it until a
    commit, so without one (here a rollback) the row must not be there."""
    async with engine.connect() as conn:
        await text_execute(conn, _INSERT, {"v": 7})
        assert conn.sync_connection.in_transaction()  # SQLAlchemy ran it, in a transaction it began
        conn.sync_connection.rollback()
    async with engine.connect() as conn:
        assert await text_scalar(conn, _COUNT, {"low": 0}) == 0


async def test_a_rolled_back_transaction_takes_the_direct_writes_with_it(engine: InlineEngine) -> None:
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await text_execute(conn, _INSERT, {"v": 3})
            raise RuntimeError("the batch failed")
    async with engine.connect() as conn:
        assert await text_scalar(conn, _COUNT, {"low": 0}) == 0


async def test_driver_errors_surface_as_sqlalchemy_errors(engine: InlineEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            await text_execute(conn, sa.text("INSERT INTO missing (v) VALUES (:v)"), {"v": 1})
    async with engine.connect() as conn:
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            await text_scalar(conn, sa.text("SELECT v FROM missing WHERE v = :v"), {"v": 1})
        with pytest.raises(sa.exc.DBAPIError):  # a missing parameter, as SQLAlchemy reports it too
            await text_scalar(conn, _COUNT, {})


async def test_statements_that_need_sqlalchemy_still_go_through_it(engine: InlineEngine) -> None:
    typed = sa.text("SELECT :doc").bindparams(sa.bindparam("doc", type_=sa.JSON()))
    vs = sa.bindparam("vs", expanding=True)
    expanding = sa.text("SELECT count(*) FROM t WHERE v IN :vs").bindparams(vs)
    assert _driver_sql(typed) is None and _driver_sql(expanding) is None
    assert _driver_sql(_COUNT) == (_COUNT.text, True)
    async with engine.begin() as conn:
        assert await text_scalar(conn, typed, {"doc": {"a": 1}}) == '{"a": 1}'  # serialized by SQLAlchemy
        await text_execute(conn, _INSERT, {"v": 4})
        assert await text_scalar(conn, expanding, {"vs": [4, 5]}) == 1


async def test_a_locked_database_at_begin_is_a_sqlalchemy_error(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE, now emitted on the driver's connection, still fails as SQLAlchemy's error
    (which the write thread turns into a StoreError) when another writer holds the lock."""
    path = tmp_path / "locked.db"
    holder, waiter = _engine(path), _engine(path, busy_timeout_ms=50)
    try:
        async with holder.begin() as held:
            await held.exec_driver_sql("CREATE TABLE t (v INTEGER)")
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                async with waiter.begin():
                    pass
    finally:
        await holder.dispose()
        await waiter.dispose()


async def test_the_write_thread_reports_a_failed_direct_write_as_a_store_error(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        await db.migrate()

        async def bad(conn: InlineConnection) -> None:
            await text_execute(conn, sa.text("INSERT INTO missing (v) VALUES (:v)"), {"v": 1})

        with pytest.raises(StoreError, match="no such table"):
            await db.transaction(bad)  # type: ignore[arg-type]
    finally:
        await db.close()
