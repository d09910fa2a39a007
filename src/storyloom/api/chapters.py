"""Chapter jobs of a project: build the request from the project, submit, store the versions.

Versions are stored from the job's result the first time the API sees the job completed (reading
the job, the chapter, or streaming its end). The write is idempotent per (chapter, job, index), so
several API processes doing it at once, or the job handler doing it too, is harmless.
"""

from __future__ import annotations

from storyloom.api.schemas import ChapterCreate
from storyloom.api.services import Services
from storyloom.jobs.models import Job, JobStatus
from storyloom.novel.models import ChapterRequest, Character, NovelInput
from storyloom.store.projects import Chapter, Project, versions_from_result

__all__ = ["materialize_if_done", "submit_chapter_job"]


def _overall_outline(project: Project) -> str:
    parts = [f"{project.title}", project.premise.strip(), project.outline.strip()]
    return "\n\n".join(p for p in parts if p)


async def submit_chapter_job(
    services: Services, project: Project, chapter: Chapter, body: ChapterCreate, *, tenant: str
) -> tuple[Job, bool]:
    request = ChapterRequest(
        input=NovelInput(
            overall_outline=_overall_outline(project)[:20000],
            chapter_outline=body.outline,
            genre=project.genre,
            characters=[Character.model_validate(c) for c in project.characters],
            style=project.style,
            target_length=body.target_length,
            language="en" if project.language == "en" else "zh",
        ),
        versions=body.versions,
        max_parallel=body.max_parallel,
        previous_summary=await services.projects.previous_summary(project.id, chapter.index),
    )
    payload = {**request.model_dump(mode="json"), "project_id": project.id, "chapter_id": chapter.id}
    key = f"project:{project.id}:{body.idempotency_key}" if body.idempotency_key else None
    return await services.submit(
        "chapter", payload, priority=body.priority, idempotency_key=key, tenant=tenant
    )


async def materialize_if_done(services: Services, job: Job) -> None:
    """Store a completed project chapter job's versions once (no-op for other jobs)."""
    chapter_id = job.payload.get("chapter_id")
    if job.status is not JobStatus.COMPLETED or not isinstance(chapter_id, str) or not job.result:
        return
    if await services.projects.has_versions_of_job(chapter_id, job.id):
        return
    if await services.projects.get_chapter(chapter_id) is None:
        return  # the chapter (or its project) was deleted meanwhile
    versions, summary = versions_from_result(job.result)
    await services.projects.save_versions(chapter_id, job.id, versions, summary=summary)
