"""What a book looks like to its author: each outlined chapter's state, chosen version, length,
cost and staleness. One reading for the API, the CLI's `book status` and the exports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from storyloom.apps.novel.book.runs import BookRunStore, RunStatus
from storyloom.apps.novel.book.staleness import StalenessStore
from storyloom.apps.novel.length import count_length
from storyloom.apps.novel.projects import Chapter, ChapterVersion, Project, ProjectStore
from storyloom.errors import NotFoundError
from storyloom.jobs.usage import job_usage
from storyloom.store.database import Database

__all__ = ["ChapterState", "chapter_states", "find_book", "numbered_versions"]


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


async def chapter_states(db: Database, book: Project, *, with_text: bool = False) -> list[ChapterState]:
    store = ProjectStore(db)
    stale = await StalenessStore(db).of_book(book.id)
    writing = {r.chapter for r in await BookRunStore(db).active(book.id) if r.status is RunStatus.RUNNING}
    chapters: list[Chapter] = await store.list_chapters(book.id)
    out: list[ChapterState] = []
    for chapter in chapters:
        versions = await store.list_versions(chapter.id)
        job_ids = sorted({v.job_id for v in versions if v.job_id})
        cost = sum(u.cost_usd for u in (await job_usage(db, job_ids)).values()) if job_ids else 0.0
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
        language = "en" if book.language == "en" else "zh"
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
