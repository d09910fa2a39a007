"""What a book looks like to its author: each outlined chapter's state, chosen version, length,
cost and staleness. One reading for the API, the CLI's `book status` and the exports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from storyloom.apps.novel.book.runs import BookRunStore, RunStatus
from storyloom.apps.novel.book.staleness import StalenessStore
from storyloom.apps.novel.book.tables import chapter_staleness
from storyloom.apps.novel.length import count_length
from storyloom.apps.novel.projects import Chapter, ChapterVersion, Project, ProjectStore
from storyloom.apps.novel.tables import chapter_versions, chapters
from storyloom.errors import NotFoundError
from storyloom.jobs.usage import job_usage
from storyloom.store.database import Database
from storyloom.store.schema import usage

__all__ = ["BookSummary", "ChapterState", "book_summary", "chapter_states", "find_book", "numbered_versions"]


@dataclass(frozen=True, slots=True)
class ChapterState:
    number: int
    title: str
    state: str  # outlined | writing | awaiting_choice | chosen | stale
    chosen_version: int | None  # the chosen version's number among the chapter's versions (1-based)
    length: int
    cost_usd: float
    stale_reason: str | None
    memory_stale: bool
    chapter_id: str
    outline: str
    summary: str | None
    text: str | None

    def to_dict(self, *, text: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not text:
            out.pop("text")
        return out


async def find_book(db: Database, book: str, *, tenant: str) -> Project:
    """A book by id, else by its exact title (the newest of that title)."""
    store = ProjectStore(db)
    found = await store.get_project(book, tenant=tenant)
    if found is not None:
        return found
    offset = 0
    while True:
        page = await store.list_projects(tenant=tenant, limit=200, offset=offset)
        for project in page:
            if project.title == book:
                return project
        if len(page) < 200:
            break
        offset += 200
    raise NotFoundError(f"there is no book {book!r} (neither an id nor a title).")


def numbered_versions(versions: list[ChapterVersion]) -> list[tuple[int, ChapterVersion]]:
    """Versions numbered 1.. in the order they were written (old ones keep their numbers)."""
    return list(enumerate(versions, start=1))


async def _versions_of_book(db: Database, book_id: str) -> dict[str, list[ChapterVersion]]:
    """Every version of the book's chapters in one query, by chapter id, in the order written."""
    query = (
        sa.select(chapter_versions)
        .join(chapters, chapters.c.id == chapter_versions.c.chapter_id)
        .where(chapters.c.project_id == book_id)
        .order_by(chapter_versions.c.created_at, chapter_versions.c.index)
    )
    out: dict[str, list[ChapterVersion]] = {}
    async with db.read() as conn:
        for row in await conn.execute(query):
            m = row._mapping
            version = ChapterVersion(**{name: m[name] for name in ChapterVersion.__slots__})
            out.setdefault(version.chapter_id, []).append(version)
    return out


async def chapter_states(db: Database, book: Project, *, with_text: bool = False) -> list[ChapterState]:
    """A handful of queries whatever the number of chapters (a 500-chapter book lists fast)."""
    store = ProjectStore(db)
    stale = await StalenessStore(db).of_book(book.id)
    writing = {r.chapter for r in await BookRunStore(db).active(book.id) if r.status is RunStatus.RUNNING}
    rows: list[Chapter] = await store.list_chapters(book.id)
    by_chapter = await _versions_of_book(db, book.id)
    job_ids = sorted({v.job_id for vs in by_chapter.values() for v in vs if v.job_id})
    spent = await job_usage(db, job_ids)
    language = "en" if book.language == "en" else "zh"
    out: list[ChapterState] = []
    for chapter in rows:
        versions = by_chapter.get(chapter.id, [])
        ids = {v.job_id for v in versions if v.job_id}
        cost = sum(spent[j].cost_usd for j in ids if j in spent)
        chosen = next(((n, v) for n, v in numbered_versions(versions) if v.chosen), None)
        flags = stale.get(chapter.index)
        if flags is not None and flags.stale_reason:
            state = "stale"
        elif chapter.index in writing and chosen is None:
            state = "writing"
        elif chosen is not None:
            state = "chosen"
        elif versions:
            state = "awaiting_choice"
        else:
            state = "outlined"
        text = chosen[1].text if chosen is not None else None
        out.append(
            ChapterState(
                number=chapter.index,
                title=chapter.title,
                state=state,
                chosen_version=chosen[0] if chosen is not None else None,
                length=count_length(text, language) if text else 0,
                cost_usd=round(cost, 8),
                stale_reason=flags.stale_reason if flags is not None else None,
                memory_stale=bool(flags.memory_stale) if flags is not None else False,
                chapter_id=chapter.id,
                outline=chapter.outline,
                summary=chapter.summary,
                text=text if with_text else None,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class BookSummary:
    chapters: int
    written: int
    stale: int
    cost_usd: float


async def book_summary(db: Database, book_id: str) -> BookSummary:
    """Counts and cost of a book in four aggregate queries (the book list shows many)."""
    n_chapters = sa.select(sa.func.count()).select_from(chapters).where(chapters.c.project_id == book_id)
    n_written = n_chapters.where(chapters.c.current_version_id.is_not(None))
    n_stale = (
        sa.select(sa.func.count())
        .select_from(chapter_staleness)
        .where(chapter_staleness.c.book_id == book_id, chapter_staleness.c.stale_reason.is_not(None))
    )
    job_ids = (
        sa.select(chapter_versions.c.job_id)
        .join(chapters, chapters.c.id == chapter_versions.c.chapter_id)
        .where(chapters.c.project_id == book_id, chapter_versions.c.job_id.is_not(None))
        .distinct()
    )
    cost = sa.select(sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0)).where(usage.c.job_id.in_(job_ids))
    async with db.read() as conn:
        return BookSummary(
            chapters=int(await conn.scalar(n_chapters) or 0),
            written=int(await conn.scalar(n_written) or 0),
            stale=int(await conn.scalar(n_stale) or 0),
            cost_usd=round(float(await conn.scalar(cost) or 0.0), 8),
        )
