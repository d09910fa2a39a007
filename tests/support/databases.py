"""A fresh empty database per test, on SQLite or in the session's PostgreSQL cluster (shared by
conftest's fixtures and tests that start their own processes on a database)."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest


async def fresh_database_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new empty database: a file for SQLite (in a directory `from_url` must create), a new database
    in the session cluster for Postgres."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'jobs.db'}"
    admin_url: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
