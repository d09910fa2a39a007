"""Downstream invalidation: which chapters must be written again, and whose memory re-extracted.

What a chapter says depends on the bible, its outline entry and the memory of the chapters before
it; so an edit marks, with a one-sentence reason, every written chapter after the edit point (and
the edited chapter's own memory). A chapter written again (a new chosen version) is fresh. Only
chapters that have versions are marked: an outlined chapter not yet written will read the memory
as it is when it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.apps.novel.book.tables import chapter_staleness
from storyloom.apps.novel.tables import chapter_versions, chapters
from storyloom.store.database import Database

__all__ = ["Staleness", "StalenessStore"]


@dataclass(frozen=True, slots=True)
class Staleness:
    chapter_id: str
    index: int
    stale_reason: str | None
    memory_stale: bool
    memory_reason: str | None


class StalenessStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def of_book(self, book_id: str) -> dict[int, Staleness]:
        query = sa.select(chapter_staleness).where(chapter_staleness.c.book_id == book_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        out: dict[int, Staleness] = {}
        for r in rows:
            if r.stale_reason is None and not r.memory_stale:
                continue
            out[int(r._mapping["index"])] = Staleness(
                r.chapter_id, int(r._mapping["index"]), r.stale_reason, bool(r.memory_stale), r.memory_reason
            )
        return out

    async def mark_from(self, book_id: str, first: int, reason: str) -> list[int]:
        """Every written chapter numbered `first` or later: text and memory stale. Returns them."""
        written = (
            sa.select(chapters.c.id, chapters.c.index)
            .where(
                chapters.c.project_id == book_id,
                chapters.c.index >= first,
                sa.exists().where(chapter_versions.c.chapter_id == chapters.c.id),
            )
            .order_by(chapters.c.index)
        )

        async def tx(conn: AsyncConnection) -> list[int]:
            rows = (await conn.execute(written)).all()
            for chapter_id, index in rows:
                await _upsert(
                    conn,
                    chapter_id,
                    book_id,
                    int(index),
                    stale_reason=reason,
                    memory_stale=True,
                    memory_reason=reason,
                )
            return [int(index) for _, index in rows]

        return await self._db.transaction(tx)

    async def chosen_text_changed(self, book_id: str, chapter_id: str, index: int, reason: str) -> list[int]:
        """Chapter `index` has a new chosen text: its memory is stale, later chapters are stale."""

        async def tx(conn: AsyncConnection) -> None:
            await _upsert(
                conn, chapter_id, book_id, index, stale_reason=None, memory_stale=True, memory_reason=reason
            )

        await self._db.transaction(tx)
        return await self.mark_from(book_id, index + 1, reason)

    async def written(self, chapter_id: str, book_id: str, index: int, *, memory_fresh: bool) -> None:
        """The chapter has a fresh chosen text (and, if `memory_fresh`, memory extracted from it)."""

        async def tx(conn: AsyncConnection) -> None:
            if memory_fresh:
                await conn.execute(
                    chapter_staleness.delete().where(chapter_staleness.c.chapter_id == chapter_id)
                )
            else:
                await _upsert(
                    conn,
                    chapter_id,
                    book_id,
                    index,
                    stale_reason=None,
                    memory_stale=True,
                    memory_reason="its memory has not been extracted yet",
                )

        await self._db.transaction(tx)

    async def memory_fresh(self, chapter_id: str) -> None:
        async def tx(conn: AsyncConnection) -> None:
            await conn.execute(
                chapter_staleness.update()
                .where(chapter_staleness.c.chapter_id == chapter_id)
                .values(memory_stale=False, memory_reason=None)
            )
            await conn.execute(
                chapter_staleness.delete().where(
                    chapter_staleness.c.chapter_id == chapter_id, chapter_staleness.c.stale_reason.is_(None)
                )
            )

        await self._db.transaction(tx)


async def _upsert(
    conn: AsyncConnection,
    chapter_id: str,
    book_id: str,
    index: int,
    *,
    stale_reason: str | None,
    memory_stale: bool,
    memory_reason: str | None,
) -> None:
    values = {
        "stale_reason": stale_reason,
        "memory_stale": memory_stale,
        "memory_reason": memory_reason,
        "at": time.time(),
    }
    exists = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(chapter_staleness)
        .where(chapter_staleness.c.chapter_id == chapter_id)
    )
    if exists:
        await conn.execute(
            chapter_staleness.update().where(chapter_staleness.c.chapter_id == chapter_id).values(**values)
        )
    else:
        await conn.execute(
            chapter_staleness.insert().values(chapter_id=chapter_id, book_id=book_id, index=index, **values)
        )
