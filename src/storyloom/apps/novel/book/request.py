"""The chapter request of one chapter of a book, built when the chapter runs (never when queued).

Chapters queued together used to share the summary captured at submission (none, for chapters
2..N); reading here, after the previous chapter was chosen, gives each its real predecessor.
The data layer's context builder replaces the plain fields below once it exists; the seam is
this one function.
"""

from __future__ import annotations

from storyloom.apps.novel.models import ChapterRequest, Character, NovelInput
from storyloom.apps.novel.projects import Chapter, Project, ProjectStore

__all__ = ["chapter_request"]


def _overall(project: Project) -> str:
    parts = [project.title, project.premise.strip(), project.outline.strip()]
    return "\n\n".join(p for p in parts if p)[:20000]


async def chapter_request(
    store: ProjectStore,
    project: Project,
    chapter: Chapter,
    *,
    versions: int,
    target_length: int | None = None,
) -> ChapterRequest:
    previous = await store.previous_summary(project.id, chapter.index)
    outline = chapter.outline.strip() or chapter.title.strip() or f"Chapter {chapter.index}"
    return ChapterRequest(
        input=NovelInput(
            overall_outline=_overall(project),
            chapter_outline=outline[:20000],
            genre=project.genre,
            characters=[Character.model_validate(c) for c in project.characters][:30],
            style=project.style[:1000],
            target_length=target_length,
            language="en" if project.language == "en" else "zh",
        ),
        versions=versions,
        max_parallel=versions,
        previous_summary=previous[:5000] if previous else None,
    )
