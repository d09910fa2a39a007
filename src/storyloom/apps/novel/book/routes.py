"""/api/books: a book's chapters, versions, runs, staleness, exports (docs/CONTRACTS.md).

Every route reads the book with the caller's tenant first: another tenant's book is 404 and
nothing of it is read or changed."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status

from storyloom.api.deps import AUTH, NOT_FOUND, QUEUE_FULL, Responses, ServicesDep, Tenant
from storyloom.api.errors import NotFoundError
from storyloom.api.presenters import job_out
from storyloom.api.schemas import JobOut
from storyloom.api.services import Services
from storyloom.apps.novel.bible import StoryBible
from storyloom.apps.novel.book.control import BookControl
from storyloom.apps.novel.book.export import MEDIA_TYPES, export_book
from storyloom.apps.novel.book.plan import PLAN_JOB_KIND
from storyloom.apps.novel.book.rewrite import REWRITE_JOB_KIND
from storyloom.apps.novel.book.runs import BookRun, Chooser
from storyloom.apps.novel.book.schemas import (
    MAX_NUMBER,
    AcceptIn,
    BookCreate,
    BookCreated,
    BookMemoryOut,
    BookOut,
    BookVersionOut,
    ChapterDetailOut,
    ChapterStateOut,
    ChapterTextIn,
    ChooseIn,
    OutlineChapterIn,
    RegenerateIn,
    RewriteIn,
    RunCreate,
    RunOut,
    run_out,
)
from storyloom.apps.novel.book.view import ChapterState, book_summary, chapter_states, numbered_versions
from storyloom.apps.novel.bookstore import BookStore
from storyloom.apps.novel.length import count_length
from storyloom.apps.novel.outline import BookOutline, OutlineChapter
from storyloom.apps.novel.projects import Chapter, Project, ProjectStore
from storyloom.apps.novel.quality import BookEval, book_eval
from storyloom.errors import InputError

__all__ = ["router"]

router = APIRouter(prefix="/api/books", tags=["books"], responses=AUTH)

Number = Annotated[int, Path(ge=1, le=MAX_NUMBER, description="the chapter's number")]
CONFLICT: Responses = {409: {"description": "the run's or the book's state forbids this now"}}


def _length(target: int | None) -> dict[str, int]:
    return {"target_length": target} if target is not None else {}


def _control(services: Services) -> BookControl:
    return BookControl(services.db, services.queue)


async def _book(services: Services, book_id: str, tenant: str) -> Project:
    book = await ProjectStore(services.db).get_project(book_id, tenant=tenant)
    if book is None:
        raise NotFoundError(f"no book {book_id!r}.")
    return book


async def _chapter(services: Services, book: Project, number: int) -> Chapter:
    found = next(
        (c for c in await ProjectStore(services.db).list_chapters(book.id) if c.index == number), None
    )
    if found is None:
        raise NotFoundError(f"book {book.id!r} has no chapter {number}.")
    return found


async def _run(services: Services, book: Project, run_id: str) -> BookRun:
    run = await _control(services).runs.get(run_id, tenant=book.tenant, book_id=book.id)
    if run is None:
        raise NotFoundError(f"book {book.id!r} has no run {run_id!r}.")
    return run


def _state_out(c: ChapterState) -> ChapterStateOut:
    return ChapterStateOut.model_validate(c.to_dict())


async def _book_out(services: Services, book: Project) -> BookOut:
    summary = await book_summary(services.db, book.id)
    return BookOut(
        id=book.id,
        title=book.title,
        premise=book.premise,
        language=book.language,
        genre=book.genre,
        chapters=summary.chapters,
        written=summary.written,
        stale=summary.stale,
        cost_usd=summary.cost_usd,
        created_at=book.created_at,
        updated_at=book.updated_at,
    )


async def _detail(services: Services, book: Project, number: int) -> ChapterDetailOut:
    for c in await chapter_states(services.db, book, with_text=True):
        if c.number == number:
            return ChapterDetailOut.model_validate(c.to_dict(text=True))
    raise NotFoundError(f"book {book.id!r} has no chapter {number}.")


# -- books ---------------------------------------------------------------------------------------


@router.post(
    "",
    response_model=BookCreated,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **QUEUE_FULL,
        201: {"model": BookCreated, "description": "Created with an empty outline (`generate: false`)"},
    },
)
async def create_book(
    body: BookCreate, services: ServicesDep, tenant: Tenant, response: Response
) -> BookCreated:
    """A new book; with `generate` (default) a job writes its bible and its outline of `chapters`."""
    store = ProjectStore(services.db)
    book = await store.create_project(
        tenant=tenant, title=body.title, premise=body.premise, language=body.language, genre=body.genre
    )
    job = None
    if body.generate:
        request = body.model_dump(
            mode="json", include={"title", "premise", "chapters", "language", "genre", "target_length"}
        )
        job, _ = await services.submit(
            PLAN_JOB_KIND,
            {"book_id": book.id, "request": request},
            priority=body.priority,
            idempotency_key=None,
            tenant=tenant,
        )
    else:  # an empty outline of `chapters` to fill in (PUT /outline/{number}) before writing
        chapters = [
            OutlineChapter(number=n, **_length(body.target_length)) for n in range(1, body.chapters + 1)
        ]
        await BookStore(services.db).save_outline(book.id, BookOutline(chapters=chapters), tenant=tenant)
        response.status_code = status.HTTP_201_CREATED
    out = await _book_out(services, book)
    return BookCreated(**out.model_dump(), job=job_out(job) if job is not None else None)


@router.get("", response_model=list[BookOut])
async def list_books(
    services: ServicesDep,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[BookOut]:
    found = await ProjectStore(services.db).list_projects(tenant=tenant, limit=limit, offset=offset)
    return [await _book_out(services, b) for b in found]


@router.get("/{book_id}", response_model=BookOut, responses=NOT_FOUND)
async def get_book(book_id: str, services: ServicesDep, tenant: Tenant) -> BookOut:
    return await _book_out(services, await _book(services, book_id, tenant))


@router.delete("/{book_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_book(book_id: str, services: ServicesDep, tenant: Tenant) -> Response:
    book = await _book(services, book_id, tenant)
    control = _control(services)
    for run in await control.runs.active(book.id):
        await control.cancel(run)
    await ProjectStore(services.db).delete_project(book.id, tenant=tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- chapters and versions -----------------------------------------------------------------------


@router.get("/{book_id}/chapters", response_model=list[ChapterStateOut], responses=NOT_FOUND)
async def list_chapters(book_id: str, services: ServicesDep, tenant: Tenant) -> list[ChapterStateOut]:
    book = await _book(services, book_id, tenant)
    return [_state_out(c) for c in await chapter_states(services.db, book)]


@router.get("/{book_id}/chapters/{number}", response_model=ChapterDetailOut, responses=NOT_FOUND)
async def get_chapter(
    book_id: str, number: Number, services: ServicesDep, tenant: Tenant
) -> ChapterDetailOut:
    return await _detail(services, await _book(services, book_id, tenant), number)


@router.put("/{book_id}/chapters/{number}/text", response_model=ChapterDetailOut, responses=NOT_FOUND)
async def put_chapter_text(
    book_id: str, number: Number, body: ChapterTextIn, services: ServicesDep, tenant: Tenant
) -> ChapterDetailOut:
    """The author's own text: a new chosen version; the chapters after it become stale."""
    book = await _book(services, book_id, tenant)
    chapter = await _chapter(services, book, number)
    await _control(services).edit_text(book, chapter, body.text)
    return await _detail(services, book, number)


@router.get("/{book_id}/outline", response_model=BookOutline, responses=NOT_FOUND)
async def get_outline(book_id: str, services: ServicesDep, tenant: Tenant) -> BookOutline:
    book = await _book(services, book_id, tenant)
    found = await BookStore(services.db).outline(book.id, tenant=tenant)
    return found.outline if found is not None else BookOutline()


@router.put("/{book_id}/outline/{number}", response_model=ChapterDetailOut, responses=NOT_FOUND)
async def put_outline_chapter(
    book_id: str, number: Number, body: OutlineChapterIn, services: ServicesDep, tenant: Tenant
) -> ChapterDetailOut:
    """Edit an outlined chapter (a new outline version); written chapters from it on become stale."""
    book = await _book(services, book_id, tenant)
    await _chapter(services, book, number)
    books = BookStore(services.db)
    found = await books.outline(book.id, tenant=tenant)
    outline = found.outline if found is not None else BookOutline()
    current = outline.chapter(number) or OutlineChapter(number=number)
    edited = current.model_copy(update=body.model_dump(exclude_none=True))
    if edited != current:
        others = [c for c in outline.chapters if c.number != number]
        await books.save_outline(
            book.id,
            outline.model_copy(update={"chapters": sorted([*others, edited], key=lambda c: c.number)}),
            tenant=tenant,
        )
        await _control(services).staleness.mark_from(book.id, number, f"chapter {number}'s outline changed.")
    return await _detail(services, book, number)


@router.get("/{book_id}/bible", response_model=StoryBible, responses=NOT_FOUND)
async def get_bible(book_id: str, services: ServicesDep, tenant: Tenant) -> StoryBible:
    book = await _book(services, book_id, tenant)
    found = await BookStore(services.db).bible(book.id, tenant=tenant)
    return found.bible if found is not None else StoryBible(premise=book.premise, genre=book.genre)


@router.put("/{book_id}/bible", response_model=StoryBible, responses=NOT_FOUND)
async def put_bible(book_id: str, body: StoryBible, services: ServicesDep, tenant: Tenant) -> StoryBible:
    """A new version of the bible; every written chapter becomes stale."""
    book = await _book(services, book_id, tenant)
    books = BookStore(services.db)
    found = await books.bible(book.id, tenant=tenant)
    if found is None or found.bible != body:
        await books.save_bible(book.id, body, tenant=tenant, source="edited")
        await _control(services).staleness.mark_from(book.id, 1, "the story bible changed.")
    return body


@router.get("/{book_id}/memory", response_model=BookMemoryOut, responses=NOT_FOUND)
async def get_memory(book_id: str, services: ServicesDep, tenant: Tenant) -> BookMemoryOut:
    """Each chapter's latest memory, the open foreshadowing and the character sheets."""
    book = await _book(services, book_id, tenant)
    books = BookStore(services.db)
    return BookMemoryOut(
        chapters=await books.memory(book.id, tenant=tenant),
        open_foreshadowing=await books.open_foreshadowing(book.id, tenant=tenant),
        characters=await books.character_sheets(book.id, tenant=tenant),
    )


@router.get("/{book_id}/chapters/{number}/versions", response_model=list[BookVersionOut], responses=NOT_FOUND)
async def list_versions(
    book_id: str, number: Number, services: ServicesDep, tenant: Tenant
) -> list[BookVersionOut]:
    book = await _book(services, book_id, tenant)
    chapter = await _chapter(services, book, number)
    language = "en" if book.language == "en" else "zh"
    return [
        BookVersionOut(
            id=v.id,
            number=n,
            text=v.text,
            length=count_length(v.text, language),
            chosen=v.chosen,
            judge_pick=bool(v.scores.get("judge_pick")),
            job_id=v.job_id,
            scores=dict(v.scores),
            created_at=v.created_at,
        )
        for n, v in numbered_versions(await ProjectStore(services.db).list_versions(chapter.id))
    ]


@router.post("/{book_id}/chapters/{number}/choose", response_model=ChapterDetailOut, responses=NOT_FOUND)
async def choose(
    book_id: str, number: Number, body: ChooseIn, services: ServicesDep, tenant: Tenant
) -> ChapterDetailOut:
    """Choose a version (by number or id); a run waiting for this choice goes on."""
    book = await _book(services, book_id, tenant)
    chapter = await _chapter(services, book, number)
    if (body.version is None) == (body.version_id is None):
        raise InputError("give exactly one of 'version' (its number) and 'version_id'.")
    versions = numbered_versions(await ProjectStore(services.db).list_versions(chapter.id))
    found = next((v for n, v in versions if n == body.version or v.id == body.version_id), None)
    if found is None:
        raise NotFoundError(f"chapter {number} has no version {body.version or body.version_id!r}.")
    await _control(services).choose(book, chapter, found)
    return await _detail(services, book, number)


@router.post(
    "/{book_id}/chapters/{number}/rewrite",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, **QUEUE_FULL},
)
async def rewrite(
    book_id: str, number: Number, body: RewriteIn, services: ServicesDep, tenant: Tenant
) -> JobOut:
    """Candidate rewrites of the span [start, end) of the chosen text (a job; its result holds them)."""
    book = await _book(services, book_id, tenant)
    await _chapter(services, book, number)
    chosen = await BookStore(services.db).chosen_text(book.id, number, tenant=tenant)
    if chosen is None:
        raise InputError(f"chapter {number} has no chosen text to rewrite yet.")
    if not body.start < body.end <= len(chosen.text):
        raise InputError(
            f"the passage {body.start}-{body.end} is not within the chosen text (0-{len(chosen.text)})."
        )
    payload = {"book_id": book.id, "chapter": number, "version_id": chosen.version_id, **body.model_dump()}
    job, _ = await services.submit(REWRITE_JOB_KIND, payload, priority=7, idempotency_key=None, tenant=tenant)
    return job_out(job)


@router.post(
    "/{book_id}/chapters/{number}/rewrite/{job_id}/accept",
    response_model=ChapterDetailOut,
    responses={**NOT_FOUND, **CONFLICT},
)
async def accept_rewrite(
    book_id: str, number: Number, job_id: str, body: AcceptIn, services: ServicesDep, tenant: Tenant
) -> ChapterDetailOut:
    """Make a candidate the chapter's text: a new chosen version; its memory is extracted again
    (a `novel.remember` job) and the chapters after it become stale."""
    book = await _book(services, book_id, tenant)
    chapter = await _chapter(services, book, number)
    await _control(services).accept_rewrite(book, chapter, job_id, body.candidate)
    return await _detail(services, book, number)


# -- runs --------------------------------------------------------------------------------------------


@router.post(
    "/{book_id}/runs",
    response_model=RunOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, **QUEUE_FULL, **CONFLICT},
)
async def start_run(book_id: str, body: RunCreate, services: ServicesDep, tenant: Tenant) -> RunOut:
    """Write chapters `first..last`, `versions` each, chosen by the judge or by the author."""
    book = await _book(services, book_id, tenant)
    last = body.last
    if last is None:
        chapters = await ProjectStore(services.db).list_chapters(book.id)
        last = max((c.index for c in chapters), default=0)
        if last < body.first:
            raise InputError(f"book {book.id!r} has no outlined chapter from {body.first} on.")
    run = await _control(services).start(
        book,
        first=body.first,
        last=last,
        versions=body.versions,
        chooser=Chooser(body.chooser),
        cost_cap_usd=body.cost_cap_usd,
        priority=body.priority,
    )
    return run_out(run)


@router.get("/{book_id}/runs", response_model=list[RunOut], responses=NOT_FOUND)
async def list_runs(book_id: str, services: ServicesDep, tenant: Tenant) -> list[RunOut]:
    book = await _book(services, book_id, tenant)
    return [run_out(r) for r in await _control(services).runs.of_book(book.id)]


@router.get("/{book_id}/runs/{run_id}", response_model=RunOut, responses=NOT_FOUND)
async def get_run(book_id: str, run_id: str, services: ServicesDep, tenant: Tenant) -> RunOut:
    return run_out(await _run(services, await _book(services, book_id, tenant), run_id))


@router.post("/{book_id}/runs/{run_id}/{action}", response_model=RunOut, responses={**NOT_FOUND, **CONFLICT})
async def control_run(
    book_id: str,
    run_id: str,
    action: Literal["pause", "resume", "cancel"],
    services: ServicesDep,
    tenant: Tenant,
) -> RunOut:
    """Pause (the chapter in flight finishes), resume, or cancel (the chapter in flight stops)."""
    run = await _run(services, await _book(services, book_id, tenant), run_id)
    control = _control(services)
    if action == "pause":
        return run_out(await control.pause(run))
    if action == "resume":
        return run_out(await control.resume(run))
    return run_out(await control.cancel(run))


# -- staleness -----------------------------------------------------------------------------------


@router.get("/{book_id}/stale", response_model=list[ChapterStateOut], responses=NOT_FOUND)
async def stale(book_id: str, services: ServicesDep, tenant: Tenant) -> list[ChapterStateOut]:
    book = await _book(services, book_id, tenant)
    return [
        _state_out(c) for c in await chapter_states(services.db, book) if c.state == "stale" or c.memory_stale
    ]


@router.post(
    "/{book_id}/regenerate",
    response_model=RunOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, **QUEUE_FULL, **CONFLICT},
)
async def regenerate(book_id: str, body: RegenerateIn, services: ServicesDep, tenant: Tenant) -> RunOut:
    """Write every stale chapter from `from_chapter` on again (their old versions are kept)."""
    book = await _book(services, book_id, tenant)
    run = await _control(services).regenerate(
        book,
        from_chapter=body.from_chapter,
        versions=body.versions,
        chooser=Chooser(body.chooser),
        cost_cap_usd=body.cost_cap_usd,
    )
    return run_out(run)


@router.get("/{book_id}/eval", response_model=BookEval, responses=NOT_FOUND)
async def evaluate(book_id: str, services: ServicesDep, tenant: Tenant) -> BookEval:
    """Quality measures of every chosen chapter and their trend across the book."""
    book = await _book(services, book_id, tenant)
    return await book_eval(BookStore(services.db), book.id, tenant=tenant)


# -- export ----------------------------------------------------------------------------------------


@router.get(
    "/{book_id}/export",
    responses={
        **NOT_FOUND,
        200: {"content": {t.split(";")[0]: {} for t in MEDIA_TYPES.values()}, "description": "the file"},
    },
    response_class=Response,
)
async def export(
    book_id: str,
    services: ServicesDep,
    tenant: Tenant,
    format: Annotated[Literal["md", "txt", "epub", "docx"], Query(description="the file's format")] = "md",
) -> Response:
    """The chosen chapters as one file; `X-Missing-Chapters` lists outlined chapters not yet chosen."""
    book = await _book(services, book_id, tenant)
    result = export_book(book, await chapter_states(services.db, book, with_text=True), format)
    ascii_title = book.title.encode("ascii", "ignore").decode()
    safe = "".join(ch if ch.isalnum() else "_" for ch in ascii_title)[:60].strip("_") or "book"
    headers = {
        "Content-Disposition": f'attachment; filename="{safe}.{format}"',
        "X-Missing-Chapters": ",".join(map(str, result.missing[:1000])),
    }
    return Response(result.data, media_type=result.media_type, headers=headers)
