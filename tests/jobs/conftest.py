"""Fixtures for the job layer (the `db` fixture, SQLite and PostgreSQL, is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from storyloom.jobs import JobQueue
from storyloom.store import Database


@pytest.fixture
async def queue(db: Database) -> JobQueue:
    return JobQueue(db, backoff_base_s=0.05, backoff_max_s=0.2)
