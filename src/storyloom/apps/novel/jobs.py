"""The novel's job kinds: `novel` writes one chapter, `novel.book` chains chapters.

A chapter job runs `run_chapter` with the job's durable sink and checkpoints and metered model
access (the runner's), and stores its versions when it belongs to a project chapter. A book job
is a parent that enqueues its chapters as children, each waiting for (`depends_on`) the previous
one and reading its summary when it starts; the parent waits for them holding no worker slot.
"""

from __future__ import annotations

from typing import Any

from storyloom.apps.novel.bookstore import BookStore
from storyloom.apps.novel.chapter import run_chapter
from storyloom.apps.novel.context import tail_paragraphs
from storyloom.apps.novel.models import ChapterInput, ChapterRequest, ChapterResult
from storyloom.apps.novel.projects import ProjectStore, versions_from_result
from storyloom.errors import InputError, StoryloomError
from storyloom.jobs.models import JobStatus
from storyloom.runner import AppJob

__all__ = ["BOOK_KIND", "CHAPTER_KIND", "book_job", "chapter_job"]

CHAPTER_KIND = "novel"
BOOK_KIND = "novel.book"


async def chapter_job(job: AppJob[ChapterInput]) -> ChapterResult:
    request = job.input.request()
    project_id, chapter_id = job.payload.get("project_id"), job.payload.get("chapter_id")
    if isinstance(project_id, str) and isinstance(chapter_id, str):
        request = await _with_seam(job, request, project_id, chapter_id)
    elif request.previous_summary is None and job.job.depends_on:
        previous = await job.queue.get(job.job.depends_on)
        summary = ((previous.result or {}).get("result") or {}).get("summary")
        if isinstance(summary, str) and summary:
            request = request.model_copy(update={"previous_summary": summary[:5000]})
    result = await run_chapter(
        request,
        run_id=job.id,
        services=job.run_services(language=request.input.language),
        sink=job.ctx.sink,
        checkpoints=job.ctx.checkpoints,
        coalesce=job.services.pacing,
    )
    job.degraded.extend(
        {"step": d.agent if d.version is None else f"v{d.version}/{d.agent}", "reason": d.reason}
        for d in result.degraded
    )
    chapter_id = job.payload.get("chapter_id")
    if isinstance(chapter_id, str):
        await _store_versions(job, chapter_id, result)
    return result


async def _with_seam(
    job: AppJob[Any], request: ChapterRequest, project_id: str, chapter_id: str
) -> ChapterRequest:
    """The previous chapter's summary and last paragraphs, read now that this chapter runs (its
    predecessor's job, if it had one queued, completed and chose before this one was claimed)."""
    if request.previous_summary is not None:
        return request  # the caller gave one explicitly
    projects: ProjectStore = job.shared("projects", lambda: ProjectStore(job.db))
    chapter = await projects.get_chapter(chapter_id, project_id=project_id)
    if chapter is None or chapter.index <= 1:
        return request
    books: BookStore = job.shared("books", lambda: BookStore(job.db))
    previous = await books.chosen_text(project_id, chapter.index - 1, tenant=job.tenant)
    if previous is None:
        return request
    memory = [
        m
        for m in await books.memory(project_id, tenant=job.tenant, upto=chapter.index)
        if m.number == previous.number
    ]
    summary = memory[-1].memory.summary if memory else previous.summary
    update: dict[str, Any] = {"previous_summary": summary[:5000] if summary else None}
    if not request.input.book_context:
        label = "【上一章结尾】" if request.input.language == "zh" else "## The previous chapter ended"
        seam = f"{label}\n{tail_paragraphs(previous.text, 1200)}"
        update["input"] = request.input.model_copy(update={"book_context": seam})
    return request.model_copy(update=update)


async def _store_versions(job: AppJob[Any], chapter_id: str, result: ChapterResult) -> None:
    """Store the candidates and choose the judge's pick, so the chapter has its text the moment the
    job completes (`current_version_id` set, one version `chosen`)."""
    store: ProjectStore = job.shared("projects", lambda: ProjectStore(job.db))
    if await store.get_chapter(chapter_id) is None:
        return  # deleted while the job ran
    versions, summary = versions_from_result(result.model_dump(mode="json"))
    saved = await store.save_versions(chapter_id, job.id, versions, summary=summary)
    pick = next((v for v in saved if v.index == result.chosen), None)
    if pick is not None:
        await store.choose_version(chapter_id, pick.id)


async def book_job(job: AppJob[Any]) -> dict[str, Any]:
    """Enqueue the chapters as children (idempotently, so a re-run finds them) and wait for them."""
    chapters = job.payload.get("chapters")
    if not isinstance(chapters, list) or not chapters:
        raise InputError("a book job needs a non-empty list 'chapters' of chapter requests.")
    child_ids: list[str] = []
    previous: str | None = None
    for i, chapter in enumerate(chapters, start=1):
        if not isinstance(chapter, dict):
            raise InputError(f"chapter {i} of the book is not an object.")
        if isinstance(chapter.get("input"), dict):  # a nested ChapterRequest: flatten it
            chapter = ChapterInput.of(ChapterRequest.model_validate(chapter)).model_dump(mode="json")
        child = await job.queue.submit(
            CHAPTER_KIND,
            {"input": ChapterInput.model_validate(chapter).model_dump(mode="json")},
            priority=job.priority,
            idempotency_key=f"book:{job.id}:chapter:{i}",
            tenant=job.tenant,
            parent_id=job.id,
            depends_on=previous,
        )
        child_ids.append(child.id)
        previous = child.id
    kids = {k.id: k for k in await job.queue.children(job.id)}
    if not all(cid in kids and kids[cid].status.is_terminal for cid in child_ids):
        # Wait without a worker slot (a sleeping parent used to hold the only one of
        # `serve --concurrency 1` while its children waited for it); the last child's end re-queues this.
        job.emit("book.chapters", job_ids=child_ids)
        raise job.wait_for_children()
    failed = [cid for cid in child_ids if kids[cid].status is not JobStatus.COMPLETED]
    if failed:
        raise StoryloomError(
            f"{len(failed)} of {len(child_ids)} chapters did not complete: {failed[0]} first"
        )
    return {
        "chapters": [
            {
                "job_id": cid,
                "summary": ((kids[cid].result or {}).get("result") or {}).get("summary", ""),
                "status": "completed",
            }
            for cid in child_ids
        ]
    }
