"""Chapter jobs of a project: build the request from the project and submit it.

The job's handler (`apps.novel.jobs`) stores the versions before the job counts as completed, so
the API only reads them.
"""

from __future__ import annotations

from storyloom.api.services import Services
from storyloom.apps.novel.models import ChapterInput, ChapterRequest, Character, NovelInput
from storyloom.apps.novel.projects import Chapter, Project, ProjectStore
from storyloom.apps.novel.routes.schemas import ChapterCreate
from storyloom.jobs.models import Job

__all__ = ["project_store", "submit_chapter_job"]


def project_store(services: Services) -> ProjectStore:
    store: ProjectStore = services.shared("novel.projects", lambda: ProjectStore(services.db))
    return store


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
    )
    # The seam (the previous chapter's summary and last paragraphs) is read by the job when it runs,
    # not here: chapters queued together would all read "nothing yet". A previous chapter still being
    # written is waited for, so its chosen version exists when this one starts.
    store = project_store(services)
    depends_on = await _active_job_of_previous(services, store, project, chapter, tenant)
    payload = {
        "input": ChapterInput.of(request).model_dump(mode="json"),
        "project_id": project.id,
        "chapter_id": chapter.id,
    }
    key = f"project:{project.id}:{body.idempotency_key}" if body.idempotency_key else None
    return await services.submit(
        "novel", payload, priority=body.priority, idempotency_key=key, tenant=tenant, depends_on=depends_on
    )


async def _active_job_of_previous(
    services: Services, store: ProjectStore, project: Project, chapter: Chapter, tenant: str
) -> str | None:
    """The newest job of the chapter before this one, when it has not finished yet."""
    previous = next((c for c in await store.list_chapters(project.id) if c.index == chapter.index - 1), None)
    if previous is None:
        return None
    for job_id in await store.chapter_job_ids(previous.id, tenant=tenant, limit=1):
        job = await services.queue.get(job_id, tenant=tenant)
        if not job.status.is_terminal:
            return job.id
    return None
