"""Turn the novel's store records into response bodies."""

from __future__ import annotations

from typing import Any

from storyloom.api.presenters import job_out
from storyloom.apps.novel.projects import Chapter, ChapterVersion, Project
from storyloom.apps.novel.routes.schemas import ChapterOut, ProjectOut, VersionOut
from storyloom.jobs.models import Job

__all__ = ["chapter_content", "chapter_out", "project_out", "version_out"]


def chapter_content(result: dict[str, Any] | None) -> str | None:
    """The chosen version's text of a ChapterResult (as stored by the chapter job)."""
    if not result:
        return None
    result = result.get("result", result)  # the job's envelope holds the ChapterResult
    versions = result.get("versions") or []
    chosen = result.get("chosen")
    if isinstance(chosen, int) and 1 <= chosen <= len(versions):
        text = versions[chosen - 1].get("text")
        return str(text) if text is not None else None
    text = result.get("text")
    return str(text) if text is not None else None


def project_out(project: Project) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        title=project.title,
        premise=project.premise,
        outline=project.outline,
        characters=list(project.characters),
        style=project.style,
        genre=project.genre,
        language=project.language,
        created_at=project.created_at,
        updated_at=project.updated_at,
    )


def version_out(version: ChapterVersion) -> VersionOut:
    return VersionOut(
        id=version.id,
        index=version.index,
        job_id=version.job_id,
        text=version.text,
        scores=version.scores,
        chosen=version.chosen,
        created_at=version.created_at,
    )


def chapter_out(chapter: Chapter, versions: list[ChapterVersion], jobs: list[Job]) -> ChapterOut:
    return ChapterOut(
        id=chapter.id,
        project_id=chapter.project_id,
        index=chapter.index,
        title=chapter.title,
        outline=chapter.outline,
        summary=chapter.summary,
        current_version_id=chapter.current_version_id,
        versions=[version_out(v) for v in versions],
        jobs=[job_out(j) for j in jobs],
        created_at=chapter.created_at,
        updated_at=chapter.updated_at,
    )
