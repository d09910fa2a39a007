"""Fixtures for the job layer: every contract test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from storyloom.jobs import JobQueue
from storyloom.store import Database


async def fresh_database_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new empty database: a file for SQLite, a new database in the session cluster for Postgres."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    admin_url: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await fresh_database_url(request.param, tmp_path, request)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(db_url, pool_size=4)
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def queue(db: Database) -> JobQueue:
    return JobQueue(db, backoff_base_s=0.05, backoff_max_s=0.2)
