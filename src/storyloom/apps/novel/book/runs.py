"""Book runs: one request to write chapters `first..last` of a book, advanced by a chain of jobs.

A run is a row, not a job: the job that writes chapter k submits the job for chapter k+1 and
ends, so a run that waits (for the author's choice, after a pause, between chapters) holds no
worker slot. Every change of a run is one conditional UPDATE, so a pause racing a chapter's end,
or two `choose` calls, settle on one outcome.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.apps.novel.book.tables import book_runs
from storyloom.store.database import Database

__all__ = ["ACTIVE", "TERMINAL", "BookRun", "BookRunStore", "Chooser", "RunStatus"]


class RunStatus(enum.StrEnum):
    RUNNING = "running"  # a chapter job is queued or in flight
    WAITING = "waiting"  # a chapter's versions wait for the author's choice
    PAUSED = "paused"
    COMPLETED = "completed"
    STOPPED = "stopped"  # the cost cap would have been exceeded (stop_reason "cost_cap")
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.STOPPED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE = frozenset({RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED})


class Chooser(enum.StrEnum):
    JUDGE = "judge"
    AUTHOR = "author"


@dataclass(frozen=True, slots=True)
class BookRun:
    id: str
    book_id: str
    tenant: str
    status: RunStatus
    first: int
    last: int
    chapter: int
    versions: int
    chooser: Chooser
    only_stale: bool
    cost_cap_usd: float | None
    generation: int
    job_id: str | None
    progress: dict[str, dict[str, Any]]
    stop_reason: str | None
    error: str | None
    created_at: float
    updated_at: float

    @property
    def of(self) -> int:
        return self.last - self.first + 1

    @property
    def done(self) -> int:
        """Chapters written by this run (a chapter the cost cap stopped is paid for, not done)."""
        return sum(1 for p in self.progress.values() if not p.get("stopped"))

    @property
    def cost_usd(self) -> float:
        return sum(float(p.get("cost_usd") or 0.0) for p in self.progress.values())

    @property
    def tokens(self) -> int:
        return sum(int(p.get("tokens") or 0) for p in self.progress.values())

    @property
    def cached_tokens(self) -> int:
        return sum(int(p.get("cached_tokens") or 0) for p in self.progress.values())

    @property
    def max_chapter_cost_usd(self) -> float:
        return max((float(p.get("cost_usd") or 0.0) for p in self.progress.values()), default=0.0)

    def eta_s(self, remaining: int | None = None) -> float | None:
        """Mean time of the chapters done so far times those left (None before the first)."""
        times = [float(p.get("elapsed_s") or 0.0) for p in self.progress.values()]
        if not times:
            return None
        left = remaining if remaining is not None else max(0, self.last - self.chapter + 1)
        return round(sum(times) / len(times) * left, 1)


def _run(row: sa.Row[Any]) -> BookRun:
    m = dict(row._mapping)
    m["status"] = RunStatus(m["status"])
    m["chooser"] = Chooser(m["chooser"])
    m["progress"] = dict(m.get("progress") or {})
    return BookRun(**{name: m[name] for name in BookRun.__slots__})


class BookRunStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        book_id: str,
        tenant: str,
        first: int,
        last: int,
        versions: int,
        chooser: Chooser,
        cost_cap_usd: float | None = None,
        only_stale: bool = False,
    ) -> BookRun:
        now = time.time()
        run_id = uuid.uuid4().hex
        row: dict[str, Any] = {
            "id": run_id,
            "book_id": book_id,
            "tenant": tenant,
            "status": RunStatus.RUNNING.value,
            "first": first,
            "last": last,
            "chapter": first,
            "versions": versions,
            "chooser": chooser.value,
            "only_stale": only_stale,
            "cost_cap_usd": cost_cap_usd,
            "generation": 0,
            "progress": {},
            "created_at": now,
            "updated_at": now,
        }

        async def tx(conn: AsyncConnection) -> BookRun:
            await conn.execute(book_runs.insert().values(**row))
            return await _get(conn, run_id)  # type: ignore[return-value]

        return await self._db.transaction(tx)

    async def get(
        self, run_id: str, *, tenant: str | None = None, book_id: str | None = None
    ) -> BookRun | None:
        async with self._db.read() as conn:
            run = await _get(conn, run_id)
        if run is None or (tenant is not None and run.tenant != tenant):
            return None
        if book_id is not None and run.book_id != book_id:
            return None
        return run

    async def of_book(self, book_id: str, *, limit: int = 50) -> list[BookRun]:
        query = (
            sa.select(book_runs)
            .where(book_runs.c.book_id == book_id)
            .order_by(book_runs.c.created_at.desc(), book_runs.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [_run(r) for r in await conn.execute(query)]

    async def active(self, book_id: str) -> list[BookRun]:
        query = sa.select(book_runs).where(
            book_runs.c.book_id == book_id, book_runs.c.status.in_([s.value for s in ACTIVE])
        )
        async with self._db.read() as conn:
            return [_run(r) for r in await conn.execute(query)]

    async def update(
        self,
        run_id: str,
        *,
        when: Iterable[RunStatus] | None = None,
        chapter_is: int | None = None,
        progress: Mapping[str, Mapping[str, Any]] | None = None,
        bump: bool = False,
        **values: Any,
    ) -> BookRun | None:
        """Change the run if its status is in `when` (and it is at `chapter_is`); None if not.

        `progress` entries are merged into the stored map; `bump` increments the generation."""

        async def tx(conn: AsyncConnection) -> BookRun | None:
            current = await _get(conn, run_id)
            if current is None:
                return None
            if when is not None and current.status not in set(when):
                return None
            if chapter_is is not None and current.chapter != chapter_is:
                return None
            changes = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in values.items()}
            if progress:
                changes["progress"] = {**current.progress, **{k: dict(v) for k, v in progress.items()}}
            if bump:
                changes["generation"] = current.generation + 1
            changes["updated_at"] = time.time()
            await conn.execute(book_runs.update().where(book_runs.c.id == run_id).values(**changes))
            return await _get(conn, run_id)

        return await self._db.transaction(tx)


async def _get(conn: AsyncConnection, run_id: str) -> BookRun | None:
    row = (await conn.execute(sa.select(book_runs).where(book_runs.c.id == run_id))).first()
    return _run(row) if row is not None else None
