"""/api/projects: projects, their chapters (each written by a chapter job) and candidate versions.

Every project belongs to one tenant; a project (and so its chapters, versions and jobs) of another
tenant answers 404, admin key or not."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from storyloom.api.deps import AUTH, NOT_FOUND, QUEUE_FULL, ServicesDep, Tenant
from storyloom.api.errors import NotFoundError
from storyloom.api.presenters import job_out
from storyloom.api.services import Services
from storyloom.apps.novel.projects import Chapter, Project
from storyloom.apps.novel.routes.presenters import chapter_out, project_out, version_out
from storyloom.apps.novel.routes.project_jobs import project_store, submit_chapter_job
from storyloom.apps.novel.routes.schemas import (
    ChapterCreate,
    ChapterOut,
    ChapterSubmitted,
    ProjectCreate,
    ProjectOut,
    ProjectPatch,
    VersionOut,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/projects", tags=["projects"], responses=AUTH)

IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=150)]


async def _project(services: Services, project_id: str, tenant: str) -> Project:
    project = await project_store(services).get_project(project_id, tenant=tenant)
    if project is None:
        raise NotFoundError(f"no project {project_id!r}.")
    return project


async def _chapter(services: Services, project_id: str, chapter_id: str, tenant: str) -> Chapter:
    await _project(services, project_id, tenant)
    chapter = await project_store(services).get_chapter(chapter_id, project_id=project_id)
    if chapter is None:
        raise NotFoundError(f"no chapter {chapter_id!r} in project {project_id!r}.")
    return chapter


async def _chapter_view(services: Services, chapter: Chapter, tenant: str) -> ChapterOut:
    store = project_store(services)
    job_ids = await store.chapter_job_ids(chapter.id, tenant=tenant)
    jobs = [await services.queue.get(job_id, tenant=tenant) for job_id in job_ids]
    return chapter_out(chapter, await store.list_versions(chapter.id), jobs)


@router.post("", response_model=ProjectOut, status_code=status.HTTP_201_CREATED)
async def create_project(body: ProjectCreate, services: ServicesDep, tenant: Tenant) -> ProjectOut:
    fields = body.model_dump(mode="json")
    return project_out(await project_store(services).create_project(tenant=tenant, **fields))


@router.get("", response_model=list[ProjectOut])
async def list_projects(
    services: ServicesDep,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,  # the database takes 64 bits at most
) -> list[ProjectOut]:
    found = await project_store(services).list_projects(tenant=tenant, limit=limit, offset=offset)
    return [project_out(p) for p in found]


@router.get("/{project_id}", response_model=ProjectOut, responses=NOT_FOUND)
async def get_project(project_id: str, services: ServicesDep, tenant: Tenant) -> ProjectOut:
    return project_out(await _project(services, project_id, tenant))


@router.patch("/{project_id}", response_model=ProjectOut, responses=NOT_FOUND)
async def update_project(
    project_id: str, body: ProjectPatch, services: ServicesDep, tenant: Tenant
) -> ProjectOut:
    changes = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    project = await project_store(services).update_project(project_id, changes, tenant=tenant)
    if project is None:
        raise NotFoundError(f"no project {project_id!r}.")
    return project_out(project)


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_project(project_id: str, services: ServicesDep, tenant: Tenant) -> Response:
    if not await project_store(services).delete_project(project_id, tenant=tenant):
        raise NotFoundError(f"no project {project_id!r}.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{project_id}/chapters",
    response_model=ChapterSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, **QUEUE_FULL},
)
async def write_chapter(
    project_id: str,
    body: ChapterCreate,
    services: ServicesDep,
    tenant: Tenant,
    idempotency_key: IdempotencyHeader = None,
) -> ChapterSubmitted:
    """Create (or rewrite) a chapter and queue the job that writes its versions."""
    project = await _project(services, project_id, tenant)
    if idempotency_key:
        body = body.model_copy(update={"idempotency_key": idempotency_key})
    chapter = await project_store(services).upsert_chapter(
        project.id, index=body.index, title=body.title, outline=body.outline
    )
    job, _ = await submit_chapter_job(services, project, chapter, body, tenant=tenant)
    return ChapterSubmitted(chapter=await _chapter_view(services, chapter, tenant), job=job_out(job))


@router.get("/{project_id}/chapters", response_model=list[ChapterOut], responses=NOT_FOUND)
async def list_chapters(project_id: str, services: ServicesDep, tenant: Tenant) -> list[ChapterOut]:
    await _project(services, project_id, tenant)
    return [
        await _chapter_view(services, c, tenant)
        for c in await project_store(services).list_chapters(project_id)
    ]


@router.get("/{project_id}/chapters/{chapter_id}", response_model=ChapterOut, responses=NOT_FOUND)
async def get_chapter(project_id: str, chapter_id: str, services: ServicesDep, tenant: Tenant) -> ChapterOut:
    return await _chapter_view(services, await _chapter(services, project_id, chapter_id, tenant), tenant)


@router.get(
    "/{project_id}/chapters/{chapter_id}/versions", response_model=list[VersionOut], responses=NOT_FOUND
)
async def list_versions(
    project_id: str, chapter_id: str, services: ServicesDep, tenant: Tenant
) -> list[VersionOut]:
    chapter = await _chapter(services, project_id, chapter_id, tenant)
    await _chapter_view(services, chapter, tenant)  # stores versions of jobs that finished meanwhile
    return [version_out(v) for v in await project_store(services).list_versions(chapter.id)]


@router.post(
    "/{project_id}/chapters/{chapter_id}/versions/{version_id}/choose",
    response_model=VersionOut,
    responses=NOT_FOUND,
)
async def choose_version(
    project_id: str, chapter_id: str, version_id: str, services: ServicesDep, tenant: Tenant
) -> VersionOut:
    """Make this version the chapter's text (the others stay, unchosen)."""
    chapter = await _chapter(services, project_id, chapter_id, tenant)
    version = await project_store(services).choose_version(chapter.id, version_id)
    if version is None:
        raise NotFoundError(f"no version {version_id!r} of chapter {chapter_id!r}.")
    return version_out(version)
