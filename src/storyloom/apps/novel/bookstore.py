"""The book's rows: versioned bibles and outlines, and versioned memory per chapter.

Nothing is updated in place: an edit of the bible or the outline is a new version, a new memory
extraction a new revision, so an author can look back and the invalidation logic can compare.
Every method is tenant-scoped through the project: another tenant's project reads as absent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.apps.novel.bible import StoryBible
from storyloom.apps.novel.memory import (
    ChapterMemory,
    CharacterSheet,
    MemoryRecord,
    OpenThread,
    character_sheets,
    open_threads,
)
from storyloom.apps.novel.outline import BookOutline, BookPlan, CoverageReport
from storyloom.apps.novel.tables import (
    chapter_memory,
    chapter_versions,
    chapters,
    projects,
    story_bibles,
    story_outlines,
)
from storyloom.errors import StoreError
from storyloom.store.database import Database

__all__ = ["BibleVersion", "BookStore", "ChosenText", "OutlineVersion"]


class BibleVersion(BaseModel):
    project_id: str
    version: int
    bible: StoryBible
    source: Literal["generated", "edited"]
    created_at: float


class OutlineVersion(BaseModel):
    project_id: str
    version: int
    outline: BookOutline
    coverage: CoverageReport | None = None
    created_at: float


class ChosenText(BaseModel):
    chapter_id: str
    number: int
    version_id: str
    text: str
    summary: str | None = None
    scores: dict[str, Any] = {}


def _id() -> str:
    return uuid.uuid4().hex


class BookStore:
    """Bibles, outlines and memory of one database; each method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _owned(self, conn: AsyncConnection, project_id: str, tenant: str) -> bool:
        query = sa.select(projects.c.id).where(projects.c.id == project_id, projects.c.tenant == tenant)
        return (await conn.scalar(query)) is not None

    async def _versioned(self, fn: Callable[[AsyncConnection], Any]) -> Any:
        """Run a transaction that allocates max(version) + 1; a racing writer's unique key wins, we retry."""
        for _ in range(5):
            try:
                return await self._db.transaction(fn)
            except StoreError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
        raise StoreError("could not allocate a new version; please retry.")

    # -- bible ----------------------------------------------------------------------------------

    async def save_bible(
        self,
        project_id: str,
        bible: StoryBible,
        *,
        tenant: str = "default",
        source: Literal["generated", "edited"] = "edited",
    ) -> BibleVersion | None:
        """A new version (None: no such project for this tenant)."""
        doc = bible.model_dump(mode="json")

        async def tx(conn: AsyncConnection) -> BibleVersion | None:
            if not await self._owned(conn, project_id, tenant):
                return None
            top = await conn.scalar(
                sa.select(sa.func.max(story_bibles.c.version)).where(story_bibles.c.project_id == project_id)
            )
            row = {
                "id": _id(),
                "project_id": project_id,
                "version": (top or 0) + 1,
                "bible": doc,
                "source": source,
                "created_at": time.time(),
            }
            await conn.execute(story_bibles.insert().values(**row))
            return BibleVersion(
                project_id=project_id,
                version=row["version"],
                bible=bible,
                source=source,
                created_at=row["created_at"],
            )

        result: BibleVersion | None = await self._versioned(tx)
        return result

    async def bible(
        self, project_id: str, *, tenant: str = "default", version: int | None = None
    ) -> BibleVersion | None:
        rows = await self._bibles(project_id, tenant, version, latest=True)
        return rows[0] if rows else None

    async def bible_versions(self, project_id: str, *, tenant: str = "default") -> list[BibleVersion]:
        return await self._bibles(project_id, tenant, None, latest=False)

    async def _bibles(
        self, project_id: str, tenant: str, version: int | None, *, latest: bool
    ) -> list[BibleVersion]:
        query = (
            sa.select(story_bibles)
            .join(projects, projects.c.id == story_bibles.c.project_id)
            .where(story_bibles.c.project_id == project_id, projects.c.tenant == tenant)
        )
        if version is not None:
            query = query.where(story_bibles.c.version == version)
        query = query.order_by(story_bibles.c.version.desc())
        if latest:
            query = query.limit(1)
        async with self._db.read() as conn:
            rows = list(await conn.execute(query))
        return [
            BibleVersion(
                project_id=r.project_id,
                version=r.version,
                bible=StoryBible.model_validate(r.bible),
                source="generated" if r.source == "generated" else "edited",
                created_at=r.created_at,
            )
            for r in rows
        ]

    # -- outline --------------------------------------------------------------------------------

    async def save_outline(
        self,
        project_id: str,
        outline: BookOutline,
        *,
        tenant: str = "default",
        coverage: CoverageReport | None = None,
    ) -> OutlineVersion | None:
        """A new version; the project's `chapters` rows follow it (index = number, title, outline =
        summary)."""
        doc = outline.model_dump(mode="json")
        cov = coverage.model_dump(mode="json") if coverage is not None else None

        async def tx(conn: AsyncConnection) -> OutlineVersion | None:
            if not await self._owned(conn, project_id, tenant):
                return None
            now = time.time()
            top = await conn.scalar(
                sa.select(sa.func.max(story_outlines.c.version)).where(
                    story_outlines.c.project_id == project_id
                )
            )
            version = (top or 0) + 1
            await conn.execute(
                story_outlines.insert().values(
                    id=_id(),
                    project_id=project_id,
                    version=version,
                    outline=doc,
                    coverage=cov,
                    created_at=now,
                )
            )
            for c in outline.chapters:
                insert = self._db.insert(chapters).values(
                    id=_id(),
                    project_id=project_id,
                    index=c.number,
                    title=c.title[:300],
                    outline=c.summary,
                    created_at=now,
                    updated_at=now,
                )
                await conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=["project_id", "index"],
                        set_={"title": c.title[:300], "outline": c.summary, "updated_at": now},
                    )
                )
            return OutlineVersion(
                project_id=project_id, version=version, outline=outline, coverage=coverage, created_at=now
            )

        result: OutlineVersion | None = await self._versioned(tx)
        return result

    async def outline(
        self, project_id: str, *, tenant: str = "default", version: int | None = None
    ) -> OutlineVersion | None:
        query = (
            sa.select(story_outlines)
            .join(projects, projects.c.id == story_outlines.c.project_id)
            .where(story_outlines.c.project_id == project_id, projects.c.tenant == tenant)
        )
        if version is not None:
            query = query.where(story_outlines.c.version == version)
        async with self._db.read() as conn:
            row = (await conn.execute(query.order_by(story_outlines.c.version.desc()).limit(1))).first()
        if row is None:
            return None
        return OutlineVersion(
            project_id=row.project_id,
            version=row.version,
            outline=BookOutline.model_validate(row.outline),
            coverage=CoverageReport.model_validate(row.coverage) if row.coverage else None,
            created_at=row.created_at,
        )

    async def save_plan(
        self, project_id: str, plan: BookPlan, *, tenant: str = "default"
    ) -> tuple[BibleVersion, OutlineVersion] | None:
        bible = await self.save_bible(project_id, plan.bible, tenant=tenant, source="generated")
        if bible is None:
            return None
        outline = await self.save_outline(project_id, plan.outline, tenant=tenant, coverage=plan.coverage)
        return (bible, outline) if outline is not None else None

    # -- chosen text ----------------------------------------------------------------------------

    async def chosen_text(
        self, project_id: str, number: int, *, tenant: str = "default"
    ) -> ChosenText | None:
        """Chapter `number`'s chosen version as it is now (None: not written or not chosen)."""
        found = await self._chosen(project_id, tenant, number)
        return found[0] if found else None

    async def chosen_versions(self, project_id: str, *, tenant: str = "default") -> list[ChosenText]:
        """Every chapter's chosen version, in chapter order."""
        return await self._chosen(project_id, tenant, None)

    async def _chosen(self, project_id: str, tenant: str, number: int | None) -> list[ChosenText]:
        query = (
            sa.select(
                chapters.c.id,
                chapters.c.index,
                chapters.c.summary,
                chapter_versions.c.id.label("vid"),
                chapter_versions.c.text,
                chapter_versions.c.scores,
            )
            .join(projects, projects.c.id == chapters.c.project_id)
            .join(chapter_versions, chapter_versions.c.id == chapters.c.current_version_id)
            .where(chapters.c.project_id == project_id, projects.c.tenant == tenant)
            .order_by(chapters.c.index)
        )
        if number is not None:
            query = query.where(chapters.c.index == number)
        async with self._db.read() as conn:
            rows = list(await conn.execute(query))
        return [
            ChosenText(
                chapter_id=r.id,
                number=r.index,
                version_id=r.vid,
                text=r.text,
                summary=r.summary,
                scores=dict(r.scores or {}),
            )
            for r in rows
        ]

    # -- memory ---------------------------------------------------------------------------------

    async def save_memory(
        self,
        project_id: str,
        number: int,
        memory: ChapterMemory,
        *,
        tenant: str = "default",
        version_id: str | None = None,
    ) -> MemoryRecord | None:
        """A new revision of chapter `number`'s memory (None: no such chapter for this tenant); the
        chapter's `summary` becomes the memory's."""
        doc = memory.model_dump(mode="json")

        async def tx(conn: AsyncConnection) -> MemoryRecord | None:
            if not await self._owned(conn, project_id, tenant):
                return None
            chapter_id = await conn.scalar(
                sa.select(chapters.c.id).where(
                    chapters.c.project_id == project_id, chapters.c.index == number
                )
            )
            if chapter_id is None:
                return None
            top = await conn.scalar(
                sa.select(sa.func.max(chapter_memory.c.revision)).where(
                    chapter_memory.c.chapter_id == chapter_id
                )
            )
            row = {
                "id": _id(),
                "project_id": project_id,
                "chapter_id": chapter_id,
                "number": number,
                "version_id": version_id,
                "revision": (top or 0) + 1,
                "memory": doc,
                "created_at": time.time(),
            }
            await conn.execute(chapter_memory.insert().values(**row))
            if memory.summary:
                await conn.execute(
                    chapters.update().where(chapters.c.id == chapter_id).values(summary=memory.summary)
                )
            return MemoryRecord.model_validate({**row, "memory": memory})

        result: MemoryRecord | None = await self._versioned(tx)
        return result

    async def memory(
        self, project_id: str, *, tenant: str = "default", upto: int | None = None
    ) -> list[MemoryRecord]:
        """The latest revision of every chapter's memory (chapters before `upto` when given), in order."""
        latest = (
            sa.select(chapter_memory.c.chapter_id, sa.func.max(chapter_memory.c.revision).label("rev"))
            .where(chapter_memory.c.project_id == project_id)
            .group_by(chapter_memory.c.chapter_id)
            .subquery()
        )
        query = (
            sa.select(chapter_memory)
            .join(
                latest,
                sa.and_(
                    latest.c.chapter_id == chapter_memory.c.chapter_id,
                    latest.c.rev == chapter_memory.c.revision,
                ),
            )
            .join(projects, projects.c.id == chapter_memory.c.project_id)
            .where(projects.c.tenant == tenant)
            .order_by(chapter_memory.c.number)
        )
        if upto is not None:
            query = query.where(chapter_memory.c.number < upto)
        async with self._db.read() as conn:
            rows = list(await conn.execute(query))
        return [MemoryRecord.model_validate(dict(r._mapping)) for r in rows]

    async def memory_history(
        self, project_id: str, number: int, *, tenant: str = "default"
    ) -> list[MemoryRecord]:
        query = (
            sa.select(chapter_memory)
            .join(projects, projects.c.id == chapter_memory.c.project_id)
            .where(
                chapter_memory.c.project_id == project_id,
                chapter_memory.c.number == number,
                projects.c.tenant == tenant,
            )
            .order_by(chapter_memory.c.revision)
        )
        async with self._db.read() as conn:
            return [MemoryRecord.model_validate(dict(r._mapping)) for r in await conn.execute(query)]

    async def open_foreshadowing(
        self, project_id: str, *, tenant: str = "default", at_chapter: int | None = None
    ) -> list[OpenThread]:
        return open_threads(
            await self.memory(project_id, tenant=tenant, upto=at_chapter), at_chapter=at_chapter
        )

    async def character_sheets(
        self, project_id: str, *, tenant: str = "default", upto: int | None = None
    ) -> list[CharacterSheet]:
        found = await self.bible(project_id, tenant=tenant)
        return character_sheets(
            found.bible if found else None, await self.memory(project_id, tenant=tenant, upto=upto)
        )
