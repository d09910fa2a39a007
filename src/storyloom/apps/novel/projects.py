"""Queries for the writing data: projects, their chapters, and each chapter's candidate versions.

Plain SQLAlchemy Core on the shared schema (`store/schema.py`), the same statements on SQLite and
PostgreSQL. Every multi-row change is one transaction, so a reader never sees a chapter with two
chosen versions or versions half-written by a re-run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.apps.novel.tables import chapter_versions, chapters, projects
from storyloom.errors import InputError, StoreError
from storyloom.store.database import Database
from storyloom.store.schema import jobs

__all__ = ["Chapter", "ChapterVersion", "NewVersion", "Project", "ProjectStore", "versions_from_result"]

_PROJECT_FIELDS = ("title", "premise", "outline", "characters", "style", "genre", "language")


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    tenant: str
    title: str
    premise: str
    outline: str
    characters: list[Any]
    style: str
    genre: str
    language: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Chapter:
    id: str
    project_id: str
    index: int
    title: str
    outline: str
    summary: str | None
    current_version_id: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ChapterVersion:
    id: str
    chapter_id: str
    job_id: str | None
    index: int
    text: str
    scores: dict[str, Any]
    chosen: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class NewVersion:
    """One candidate produced by a chapter job, before it is stored."""

    index: int
    text: str
    scores: dict[str, Any]


def versions_from_result(result: Mapping[str, Any]) -> tuple[list[NewVersion], str | None]:
    """A chapter job's result (novel's ChapterResult as JSON) as versions to store, plus its summary."""
    chosen = result.get("chosen")
    out: list[NewVersion] = []
    for position, version in enumerate(result.get("versions") or [], start=1):
        if not isinstance(version, Mapping) or not version.get("ok", True):
            continue
        scores = {
            "quality_score": version.get("quality_score"),
            "length": version.get("length"),
            "length_score": version.get("length_score"),
            "issues": version.get("issues") or [],
            "style_hint": version.get("style_hint"),
            "judge_pick": position == chosen,
            "length_adherence": version.get("length_adherence"),
            "length_fit": version.get("length_fit"),
            "continuity": version.get("continuity") or [],
            "measures": {
                **(version.get("measures") or {}),
                "judge": {"pick": position == chosen, "quality_score": version.get("quality_score")},
            }
            if version.get("measures")
            else {},
        }
        out.append(
            NewVersion(
                index=int(version.get("index") or position),
                text=str(version.get("text") or ""),
                scores=scores,
            )
        )
    summary = result.get("summary")
    return out, (str(summary) if summary else None)


def _new_id() -> str:
    return uuid.uuid4().hex


def _project(row: sa.Row[Any]) -> Project:
    m = row._mapping
    return Project(**{name: m[name] for name in Project.__slots__})


def _chapter(row: sa.Row[Any]) -> Chapter:
    m = row._mapping
    return Chapter(**{name: m[name] for name in Chapter.__slots__})


def _version(row: sa.Row[Any]) -> ChapterVersion:
    m = row._mapping
    return ChapterVersion(**{name: m[name] for name in ChapterVersion.__slots__})


class ProjectStore:
    """Projects, chapters and versions of one database; every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- projects -------------------------------------------------------------------------------

    async def create_project(self, *, tenant: str = "default", **fields: Any) -> Project:
        now = time.time()
        values = {name: fields[name] for name in _PROJECT_FIELDS if name in fields}
        values.setdefault("characters", [])
        row = {"id": _new_id(), "tenant": tenant, "created_at": now, "updated_at": now, **values}

        async def tx(conn: AsyncConnection) -> Project:
            await conn.execute(projects.insert().values(**row))
            return await self._get_project(conn, row["id"], tenant)  # type: ignore[return-value]

        return await self._db.transaction(tx)

    async def get_project(self, project_id: str, *, tenant: str = "default") -> Project | None:
        async with self._db.read() as conn:
            return await self._get_project(conn, project_id, tenant)

    async def list_projects(
        self, *, tenant: str = "default", limit: int = 50, offset: int = 0
    ) -> list[Project]:
        query = (
            sa.select(projects)
            .where(projects.c.tenant == tenant)
            .order_by(projects.c.created_at.desc(), projects.c.id)
            .limit(limit)
            .offset(offset)
        )
        async with self._db.read() as conn:
            return [_project(row) for row in await conn.execute(query)]

    async def update_project(
        self, project_id: str, changes: Mapping[str, Any], *, tenant: str = "default"
    ) -> Project | None:
        values = {name: changes[name] for name in _PROJECT_FIELDS if name in changes}

        async def tx(conn: AsyncConnection) -> Project | None:
            if values:
                await conn.execute(
                    projects.update()
                    .where(projects.c.id == project_id, projects.c.tenant == tenant)
                    .values(**values, updated_at=time.time())
                )
            return await self._get_project(conn, project_id, tenant)

        return await self._db.transaction(tx)

    async def delete_project(self, project_id: str, *, tenant: str = "default") -> bool:
        """Delete the project with its chapters and versions (explicitly: SQLite may not enforce FKs)."""
        chapter_ids = sa.select(chapters.c.id).where(chapters.c.project_id == project_id)

        async def tx(conn: AsyncConnection) -> bool:
            if await self._get_project(conn, project_id, tenant) is None:
                return False
            await conn.execute(
                chapter_versions.delete().where(chapter_versions.c.chapter_id.in_(chapter_ids))
            )
            await conn.execute(chapters.delete().where(chapters.c.project_id == project_id))
            await conn.execute(projects.delete().where(projects.c.id == project_id))
            return True

        return await self._db.transaction(tx)

    @staticmethod
    async def _get_project(conn: AsyncConnection, project_id: str, tenant: str) -> Project | None:
        query = sa.select(projects).where(projects.c.id == project_id, projects.c.tenant == tenant)
        row = (await conn.execute(query)).first()
        return _project(row) if row is not None else None

    # -- chapters -------------------------------------------------------------------------------

    async def upsert_chapter(
        self, project_id: str, *, index: int | None, title: str = "", outline: str = ""
    ) -> Chapter:
        """The chapter at `index` (created, or its title/outline updated); index None = the next one."""
        now = time.time()
        for _ in range(3):  # two writers may pick the same next index; the unique key decides
            try:

                async def tx(conn: AsyncConnection) -> Chapter:
                    chosen = index
                    if chosen is None:
                        top = await conn.scalar(
                            sa.select(sa.func.max(chapters.c.index)).where(
                                chapters.c.project_id == project_id
                            )
                        )
                        chosen = (top or 0) + 1
                    existing = (
                        await conn.execute(
                            sa.select(chapters).where(
                                chapters.c.project_id == project_id, chapters.c.index == chosen
                            )
                        )
                    ).first()
                    if existing is not None:
                        changes: dict[str, Any] = {}
                        if title:
                            changes["title"] = title
                        if outline:
                            changes["outline"] = outline
                        if changes:
                            await conn.execute(
                                chapters.update()
                                .where(chapters.c.id == existing.id)
                                .values(**changes, updated_at=now)
                            )
                        return await self._get_chapter(conn, existing.id)  # type: ignore[return-value]
                    chapter_id = _new_id()
                    await conn.execute(
                        chapters.insert().values(
                            id=chapter_id,
                            project_id=project_id,
                            index=chosen,
                            title=title,
                            outline=outline,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    return await self._get_chapter(conn, chapter_id)  # type: ignore[return-value]

                return await self._db.transaction(tx)
            except StoreError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
        raise InputError("could not allocate a chapter index; please retry.")

    async def get_chapter(self, chapter_id: str, *, project_id: str | None = None) -> Chapter | None:
        async with self._db.read() as conn:
            chapter = await self._get_chapter(conn, chapter_id)
        if chapter is None or (project_id is not None and chapter.project_id != project_id):
            return None
        return chapter

    async def list_chapters(self, project_id: str) -> list[Chapter]:
        query = sa.select(chapters).where(chapters.c.project_id == project_id).order_by(chapters.c.index)
        async with self._db.read() as conn:
            return [_chapter(row) for row in await conn.execute(query)]

    async def previous_summary(self, project_id: str, index: int) -> str | None:
        """The summary of the nearest earlier chapter that has one (context for the next chapter)."""
        query = (
            sa.select(chapters.c.summary)
            .where(
                chapters.c.project_id == project_id, chapters.c.index < index, chapters.c.summary.is_not(None)
            )
            .order_by(chapters.c.index.desc())
            .limit(1)
        )
        async with self._db.read() as conn:
            value = await conn.scalar(query)
        return str(value) if value is not None else None

    @staticmethod
    async def _get_chapter(conn: AsyncConnection, chapter_id: str) -> Chapter | None:
        row = (await conn.execute(sa.select(chapters).where(chapters.c.id == chapter_id))).first()
        return _chapter(row) if row is not None else None

    # -- versions -------------------------------------------------------------------------------

    async def save_versions(
        self, chapter_id: str, job_id: str, versions: Sequence[NewVersion], *, summary: str | None = None
    ) -> list[ChapterVersion]:
        """Store a job's candidates; idempotent per (chapter, job, index), so a re-run overwrites its own."""
        now = time.time()

        async def tx(conn: AsyncConnection) -> list[ChapterVersion]:
            for version in versions:
                values = {
                    "id": _new_id(),
                    "chapter_id": chapter_id,
                    "job_id": job_id,
                    "index": version.index,
                    "text": version.text,
                    "scores": version.scores,
                    "created_at": now,
                }
                insert = self._db.insert(chapter_versions)
                await conn.execute(
                    insert.values(**values).on_conflict_do_update(
                        index_elements=["chapter_id", "job_id", "index"],
                        set_={"text": version.text, "scores": version.scores},
                    )
                )
            if summary is not None:
                await conn.execute(
                    chapters.update()
                    .where(chapters.c.id == chapter_id)
                    .values(summary=summary, updated_at=now)
                )
            query = sa.select(chapter_versions).where(
                chapter_versions.c.chapter_id == chapter_id, chapter_versions.c.job_id == job_id
            )
            return [_version(row) for row in await conn.execute(query.order_by(chapter_versions.c.index))]

        return await self._db.transaction(tx)

    async def list_versions(self, chapter_id: str) -> list[ChapterVersion]:
        query = (
            sa.select(chapter_versions)
            .where(chapter_versions.c.chapter_id == chapter_id)
            .order_by(chapter_versions.c.created_at, chapter_versions.c.index)
        )
        async with self._db.read() as conn:
            return [_version(row) for row in await conn.execute(query)]

    async def has_versions_of_job(self, chapter_id: str, job_id: str) -> bool:
        query = (
            sa.select(sa.func.count())
            .select_from(chapter_versions)
            .where(chapter_versions.c.chapter_id == chapter_id, chapter_versions.c.job_id == job_id)
        )
        async with self._db.read() as conn:
            return bool(await conn.scalar(query))

    async def choose_version(self, chapter_id: str, version_id: str) -> ChapterVersion | None:
        """Mark one version chosen (and the others not) and make it the chapter's current text."""

        async def tx(conn: AsyncConnection) -> ChapterVersion | None:
            row = (
                await conn.execute(
                    sa.select(chapter_versions).where(
                        chapter_versions.c.id == version_id, chapter_versions.c.chapter_id == chapter_id
                    )
                )
            ).first()
            if row is None:
                return None
            await conn.execute(
                chapter_versions.update()
                .where(chapter_versions.c.chapter_id == chapter_id)
                .values(chosen=chapter_versions.c.id == version_id)
            )
            await conn.execute(
                chapters.update()
                .where(chapters.c.id == chapter_id)
                .values(current_version_id=version_id, updated_at=time.time())
            )
            chosen = (
                await conn.execute(sa.select(chapter_versions).where(chapter_versions.c.id == version_id))
            ).one()
            return _version(chosen)

        return await self._db.transaction(tx)

    async def chapter_job_ids(
        self, chapter_id: str, *, tenant: str | None = None, limit: int = 20
    ) -> list[str]:
        """Ids of the chapter jobs submitted for this chapter (payload.chapter_id), newest first;
        `tenant` given: only that tenant's."""
        query = (
            sa.select(jobs.c.id)
            .where(jobs.c.kind == "novel", jobs.c.payload["chapter_id"].as_string() == chapter_id)
            .order_by(jobs.c.created_at.desc())
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        async with self._db.read() as conn:
            return [row[0] for row in await conn.execute(query)]
