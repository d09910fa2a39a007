"""What an author (API or CLI) and the chapter jobs do to a book run: start, advance, pause,
resume, cancel, choose, regenerate.

The rule that keeps a run from stalling or running a chapter twice: the run row says which
chapter is next (`chapter`) and in which generation; a chapter's job is keyed by
(run, chapter, generation), so submitting it again after a crash finds the same job, and only
the job of the run's current chapter writes anything.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from storyloom.apps.novel.book.runs import BookRun, BookRunStore, Chooser, RunStatus
from storyloom.apps.novel.book.staleness import StalenessStore
from storyloom.apps.novel.projects import Chapter, ChapterVersion, Project, ProjectStore
from storyloom.apps.novel.tables import chapters
from storyloom.errors import ConflictError, InputError
from storyloom.jobs.queue import JobQueue
from storyloom.store.database import Database

__all__ = ["BOOK_JOB_KIND", "BookControl", "job_key", "set_summary"]

BOOK_JOB_KIND = "novel.book"
REWRITE_JOB_KIND = "novel.rewrite"
REMEMBER_JOB_KIND = "novel.remember"


async def set_summary(db: Database, chapter_id: str, summary: str | None) -> None:
    """The chapter's summary is its chosen version's (None: unknown until memory is extracted)."""
    stmt = (
        chapters.update().where(chapters.c.id == chapter_id).values(summary=summary, updated_at=time.time())
    )
    await db.execute(stmt)


def job_key(run: BookRun, chapter: int) -> str:
    return f"bookrun:{run.id}:{chapter}:{run.generation}"


@dataclass(slots=True)
class BookControl:
    db: Database
    queue: JobQueue

    @property
    def projects(self) -> ProjectStore:
        return ProjectStore(self.db)

    @property
    def runs(self) -> BookRunStore:
        return BookRunStore(self.db)

    @property
    def staleness(self) -> StalenessStore:
        return StalenessStore(self.db)

    # -- runs ------------------------------------------------------------------------------------

    async def start(
        self,
        book: Project,
        *,
        first: int,
        last: int,
        versions: int,
        chooser: Chooser,
        cost_cap_usd: float | None = None,
        only_stale: bool = False,
        priority: int = 5,
    ) -> BookRun:
        if first < 1 or last < first:
            raise InputError(f"chapters {first}-{last} is not a range of chapter numbers.")
        outlined = {c.index for c in await self.projects.list_chapters(book.id)}
        missing = [n for n in range(first, last + 1) if n not in outlined]
        if missing:
            raise InputError(
                f"chapter {missing[0]} is not in the outline of book {book.id!r} "
                f"(it has {len(outlined)} outlined chapters)."
            )
        for active in await self.runs.active(book.id):
            if active.first <= last and first <= active.last:
                raise ConflictError(
                    f"run {active.id} is already {active.status.value} "
                    f"on chapters {active.first}-{active.last}."
                )
        run = await self.runs.create(
            book_id=book.id,
            tenant=book.tenant,
            first=first,
            last=last,
            versions=versions,
            chooser=chooser,
            cost_cap_usd=cost_cap_usd,
            only_stale=only_stale,
        )
        return await self.submit_next(run, priority=priority)

    async def submit_next(self, run: BookRun, *, priority: int = 5) -> BookRun:
        """Queue the job of the run's current chapter (the same job again if it exists)."""
        job = await self.queue.submit(
            BOOK_JOB_KIND,
            {"run_id": run.id, "chapter": run.chapter},
            priority=priority,
            idempotency_key=job_key(run, run.chapter),
            tenant=run.tenant,
        )
        updated = await self.runs.update(run.id, job_id=job.id)
        return updated or run

    async def pause(self, run: BookRun) -> BookRun:
        got = await self.runs.update(
            run.id, when=(RunStatus.RUNNING, RunStatus.WAITING), status=RunStatus.PAUSED
        )
        if got is None:
            raise ConflictError(
                f"run {run.id} is {run.status.value}; only a running or waiting run can be paused."
            )
        return got

    async def resume(self, run: BookRun) -> BookRun:
        if run.status is not RunStatus.PAUSED:
            raise ConflictError(f"run {run.id} is {run.status.value}; only a paused run can be resumed.")
        waiting = run.chapter <= run.last and await self._awaits_choice(run)
        if waiting:
            got = await self.runs.update(run.id, when=(RunStatus.PAUSED,), status=RunStatus.WAITING)
            return got or run
        in_flight = False
        if run.job_id is not None:
            job = await self.queue.get(run.job_id)
            in_flight = not job.status.is_terminal
        got = await self.runs.update(
            run.id, when=(RunStatus.PAUSED,), status=RunStatus.RUNNING, bump=not in_flight
        )
        if got is None:
            raise ConflictError(f"run {run.id} changed while resuming it; try again.")
        if in_flight:  # its chapter job is still running: it goes on to the next chapter itself
            return got
        if got.chapter > got.last:
            return await self.runs.update(got.id, status=RunStatus.COMPLETED) or got
        return await self.submit_next(got)

    async def cancel(self, run: BookRun) -> BookRun:
        got = await self.runs.update(
            run.id, when=(RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED), status=RunStatus.CANCELLED
        )
        if got is None:
            raise ConflictError(f"run {run.id} is {run.status.value} already.")
        if got.job_id is not None:
            job = await self.queue.get(got.job_id)
            if not job.status.is_terminal:
                await self.queue.cancel(got.job_id)
        return got

    async def _awaits_choice(self, run: BookRun) -> bool:
        """The run's current chapter has this run's versions but none chosen."""
        return str(run.chapter) in run.progress and run.progress[str(run.chapter)].get("awaiting") is True

    # -- choosing ----------------------------------------------------------------------------------

    async def choose(self, book: Project, chapter: Chapter, version: ChapterVersion) -> ChapterVersion:
        """The author's choice: the chapter's text, its memory and everything after it follow; a run
        waiting for this choice goes on to its next chapter."""
        previous = chapter.current_version_id
        chosen = await self.projects.choose_version(chapter.id, version.id)
        if chosen is None:
            raise InputError(f"version {version.id!r} is not a version of chapter {chapter.index}.")
        summary = chosen.scores.get("summary")
        await set_summary(self.db, chapter.id, summary if isinstance(summary, str) and summary else None)
        if previous is not None and previous != chosen.id:
            await self.staleness.chosen_text_changed(
                book.id, chapter.id, chapter.index, f"chapter {chapter.index}'s chosen text changed."
            )
        else:
            await self.staleness.written(chapter.id, book.id, chapter.index, memory_fresh=bool(summary))
        for run in await self.runs.active(book.id):
            if run.status is RunStatus.WAITING and run.chapter == chapter.index:
                entry = {**run.progress.get(str(chapter.index), {}), "awaiting": False}
                moved = await self.runs.update(
                    run.id,
                    when=(RunStatus.WAITING,),
                    chapter_is=chapter.index,
                    status=RunStatus.RUNNING,
                    chapter=self._next_index(run, chapter.index),
                    progress={str(chapter.index): entry},
                )
                if moved is not None:
                    await self.advance(moved)
            elif run.status is RunStatus.PAUSED and run.chapter == chapter.index:
                entry = {**run.progress.get(str(chapter.index), {}), "awaiting": False}
                await self.runs.update(
                    run.id,
                    when=(RunStatus.PAUSED,),
                    chapter_is=chapter.index,
                    chapter=self._next_index(run, chapter.index),
                    progress={str(chapter.index): entry},
                )
        return chosen

    async def regenerate(
        self,
        book: Project,
        *,
        from_chapter: int,
        versions: int,
        chooser: Chooser,
        cost_cap_usd: float | None = None,
    ) -> BookRun:
        """Write again every stale chapter from `from_chapter` on (new versions; the old are kept)."""
        stale = sorted(
            n
            for n, s in (await self.staleness.of_book(book.id)).items()
            if s.stale_reason and n >= from_chapter
        )
        if not stale:
            raise ConflictError(f"no chapter of book {book.id!r} from chapter {from_chapter} on is stale.")
        return await self.start(
            book,
            first=stale[0],
            last=stale[-1],
            versions=versions,
            chooser=chooser,
            cost_cap_usd=cost_cap_usd,
            only_stale=True,
        )

    async def edit_text(self, book: Project, chapter: Chapter, text: str) -> ChapterVersion:
        """The author's own text for a chapter: a new version, chosen (downstream goes stale)."""
        from storyloom.apps.novel.length import count_length
        from storyloom.apps.novel.projects import NewVersion

        edit_id = "e" + uuid.uuid4().hex[:31]
        language = "en" if book.language == "en" else "zh"
        scores = {"author_edit": True, "length": count_length(text, language), "judge_pick": False}
        stored = await self.projects.save_versions(
            chapter.id, edit_id, [NewVersion(index=1, text=text, scores=scores)]
        )
        return await self.choose(book, chapter, stored[0])

    async def accept_rewrite(
        self, book: Project, chapter: Chapter, job_id: str, candidate: int
    ) -> ChapterVersion:
        from storyloom.apps.novel.projects import NewVersion
        from storyloom.errors import JobNotFoundError, NotFoundError

        try:
            job = await self.queue.get(job_id, tenant=book.tenant)
        except JobNotFoundError as exc:
            raise NotFoundError(f"no rewrite job {job_id!r}.") from exc
        payload = job.payload or {}
        if (
            job.kind != REWRITE_JOB_KIND
            or payload.get("book_id") != book.id
            or payload.get("chapter") != chapter.index
        ):
            raise NotFoundError(f"job {job_id!r} is not a rewrite of chapter {chapter.index}.")
        if job.status.value != "completed":
            raise ConflictError(f"rewrite job {job_id} is {job.status.value}, not completed.")
        result = job.result or {}
        found = result.get("candidates") or []
        if not 1 <= candidate <= len(found):
            raise NotFoundError(
                f"rewrite job {job_id} has {len(found)} candidates; there is no candidate {candidate}."
            )
        if chapter.current_version_id != payload.get("version_id"):
            raise ConflictError(
                f"chapter {chapter.index}'s chosen text changed since this rewrite was written."
            )
        pick = found[candidate - 1]
        scores = {
            "rewrite": {
                "job_id": job_id,
                "candidate": candidate,
                "instruction": payload.get("instruction"),
                "start": payload.get("start"),
                "end": payload.get("end"),
            },
            "judge_pick": False,
        }
        stored = await self.projects.save_versions(
            chapter.id, job_id, [NewVersion(index=candidate, text=str(pick["text"]), scores=scores)]
        )
        version = next(v for v in stored if v.index == candidate)
        chosen = await self.choose(book, chapter, version)
        await self.queue.submit(
            REMEMBER_JOB_KIND,
            {"book_id": book.id, "chapter": chapter.index},
            priority=7,
            idempotency_key=f"remember:{version.id}",
            tenant=book.tenant,
        )
        return chosen

    @staticmethod
    def _next_index(run: BookRun, index: int) -> int:
        return index + 1

    async def advance(self, run: BookRun) -> BookRun:
        """After a chapter: the run is complete, or its next chapter's job is queued."""
        if run.chapter > run.last:
            return (
                await self.runs.update(run.id, when=(RunStatus.RUNNING,), status=RunStatus.COMPLETED) or run
            )
        if run.status is not RunStatus.RUNNING:
            return run
        return await self.submit_next(run)
