"""The `novel.book` job: write one chapter of a book run, then hand the run to the next job.

Why a chain and not a parent waiting for children: a parent that sleeps while its children run
holds a worker slot, so with `serve --concurrency 1` it waited forever for children that could
never start. Here no job waits for another: the run row (`runs.py`) carries the state between
them, and waiting for the author's choice is the absence of a job.

A killed worker's job is claimed again and finds its chapter's finished steps in its
checkpoints, so the book resumes at the chapter in flight and pays only for the steps in flight.
"""

from __future__ import annotations

import time
from typing import Any

from storyloom.apps.novel.book.control import BookControl, set_summary
from storyloom.apps.novel.book.runs import BookRun, Chooser, RunStatus
from storyloom.apps.novel.bookstore import BookStore
from storyloom.apps.novel.chapter import run_chapter
from storyloom.apps.novel.context import chapter_request
from storyloom.apps.novel.memory import remember_chapter
from storyloom.apps.novel.models import ChapterResult
from storyloom.apps.novel.projects import NewVersion, ProjectStore, versions_from_result
from storyloom.errors import AllVersionsFailedError, BudgetExceededError, InputError
from storyloom.jobs.usage import job_usage
from storyloom.runner import AppJob

__all__ = ["book_chapter_job"]


def _budget_refusal(exc: BaseException) -> bool:
    """A refusal of the run's cost cap anywhere in the error's chain (or every version's reasons)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BudgetExceededError) and "budget scope 'bookrun:" in str(seen):
            return True
        if isinstance(seen, AllVersionsFailedError) and any(
            "budget scope 'bookrun:" in e for e in seen.errors
        ):
            return True
        seen = seen.__cause__ or getattr(seen, "cause", None)
    return False


def _versions(result: ChapterResult) -> list[NewVersion]:
    """The stored candidates (the data layer's scores and quality measures), plus what the book
    runner reads back: each version's summary (the chapter's when it is chosen), target and cost."""
    stored, _ = versions_from_result(result.model_dump(mode="json"))
    by_index = {v.index: v for v in result.versions if v.ok}
    out = []
    for version in stored:
        own = by_index.get(version.index)
        extra = {
            "summary": own.summary if own else "",
            "target_length": result.target_length,
            "cost_usd": own.cost_usd if own else 0.0,
            "degraded": own.degraded if own else [],
            "quality_measured": own.quality_measured if own else False,
        }
        out.append(NewVersion(index=version.index, text=version.text, scores={**version.scores, **extra}))
    return out


async def book_chapter_job(job: AppJob[Any]) -> dict[str, Any]:
    run_id, index = job.payload.get("run_id"), job.payload.get("chapter")
    if not isinstance(run_id, str) or not isinstance(index, int):
        raise InputError("a book job needs 'run_id' (a string) and 'chapter' (an integer).")
    control = BookControl(job.db, job.queue)
    run = await control.runs.get(run_id)
    if run is None:
        raise InputError(f"there is no book run {run_id!r}.")
    if run.chapter > index and run.status is RunStatus.RUNNING:
        # An earlier attempt of this job moved the run on and died before queueing the next job.
        await control.advance(run)
        return {"run_id": run.id, "chapter": index, "outcome": "already written"}
    if run.status is not RunStatus.RUNNING or run.chapter != index:
        return {"run_id": run.id, "chapter": index, "outcome": f"not run: the run is {run.status.value}"}
    return await _write(job, control, run, index)


async def _stop(
    job: AppJob[Any], control: BookControl, run: BookRun, reason: str, error: str
) -> dict[str, Any]:
    """End the run for `reason`; what this chapter's job spent so far still counts in its cost."""
    await job.ctx.sink.writer.flush()
    spent = (await job_usage(job.db, [job.id]))[job.id]
    entry = {
        "cost_usd": round(spent.cost_usd, 8),
        "tokens": spent.usage.total_tokens,
        "cached_tokens": spent.usage.cached_tokens,
        "prompt_tokens": spent.usage.prompt_tokens,
        "job_id": job.id,
        "stopped": True,
    }
    progress = {str(run.chapter): entry} if spent.calls else None
    await control.runs.update(
        run.id,
        when=(RunStatus.RUNNING, RunStatus.PAUSED),
        status=RunStatus.STOPPED,
        stop_reason=reason,
        error=error,
        progress=progress,
    )
    job.emit("book.stopped", run_id=run.id, chapter=run.chapter, reason=reason, message=error)
    return {
        "run_id": run.id,
        "chapter": run.chapter,
        "outcome": "stopped",
        "reason": reason,
        "message": error,
    }


async def _remember(
    job: AppJob[Any], control: BookControl, books: BookStore, book_id: str, number: int, services: Any
) -> None:
    """Extract chapter `number`'s memory from its chosen text (durable: a re-run restores it)."""
    record = await remember_chapter(
        books,
        project_id=book_id,
        number=number,
        tenant=job.tenant,
        services=services,
        run_id=f"{job.id}:memory:{number}",
        checkpoints=job.ctx.checkpoints,
    )
    if record is not None:
        await control.staleness.memory_fresh(record.chapter_id)


async def _entry(
    job: AppJob[Any], started: float, result: ChapterResult, context_tokens: int, budget: int
) -> dict[str, Any]:
    """The chapter's line in the run's progress: everything its job spent (every attempt, memory too)."""
    await job.ctx.sink.writer.flush()
    spent = (await job_usage(job.db, [job.id]))[job.id]
    entry: dict[str, Any] = {
        "cost_usd": round(spent.cost_usd, 8),
        "tokens": spent.usage.total_tokens,
        "cached_tokens": spent.usage.cached_tokens,
        "prompt_tokens": spent.usage.prompt_tokens,
        "elapsed_s": round(time.monotonic() - started, 3),
        "job_id": job.id,
        "length": result.chosen_version.length,
        "target_length": result.target_length,
        "context_tokens": context_tokens,
        "context_budget": budget,
    }
    return entry


async def _write(job: AppJob[Any], control: BookControl, run: BookRun, index: int) -> dict[str, Any]:
    projects: ProjectStore = control.projects
    book = await projects.get_project(run.book_id, tenant=run.tenant)
    chapter = next((c for c in await projects.list_chapters(run.book_id) if c.index == index), None)
    if book is None or chapter is None:
        await control.runs.update(run.id, status=RunStatus.FAILED, error=f"chapter {index} no longer exists.")
        return {"run_id": run.id, "chapter": index, "outcome": "failed"}
    if (
        run.only_stale
        and index not in await control.staleness.of_book(book.id)
        and chapter.current_version_id
    ):
        moved = await control.runs.update(
            run.id, when=(RunStatus.RUNNING,), chapter_is=index, chapter=index + 1
        )
        if moved is not None:
            await control.advance(moved)
        return {"run_id": run.id, "chapter": index, "outcome": "fresh: not rewritten"}

    await job.ctx.sink.writer.flush()
    earlier = (await job_usage(job.db, [job.id]))[job.id].cost_usd  # attempts before this one
    remaining: float | None = None
    if run.cost_cap_usd is not None:
        remaining = run.cost_cap_usd - run.cost_usd - earlier
        needed = max(run.max_chapter_cost_usd - earlier, 0.0)
        if remaining <= 0 or (run.done and remaining < needed):
            return await _stop(
                job,
                control,
                run,
                "cost_cap",
                f"chapter {index} could cost ${needed:.4f}, more than the ${max(remaining, 0):.4f} "
                f"left of the run's ${run.cost_cap_usd:.4f} cap.",
            )
    job.emit(
        "book.progress",
        run_id=run.id,
        chapter=index,
        of=run.of,
        done=run.done,
        tokens=run.tokens,
        cost_usd=round(run.cost_usd, 6),
        eta_s=run.eta_s(),
        phase="writing",
    )
    started = time.monotonic()
    # One scope per run of this job (an attempt, or a re-claim after a dead worker), so the cap's
    # holds start from what the usage rows say was spent, not from another process's memory.
    scope = f"bookrun:{run.id}:{job.id}:{job.job.attempts}.{getattr(job.job, 'lease_losses', 0)}"
    services = job.run_services(language=book.language, budget_scope=scope, budget_usd=remaining)
    books = BookStore(job.db)
    try:
        if index > 1:  # the seam: the previous chapter's memory as its chosen text says now
            flags = (await control.staleness.of_book(book.id)).get(index - 1)
            if flags is not None and flags.memory_stale:
                await _remember(job, control, books, book.id, index - 1, services)
        request, pack = await chapter_request(
            books, book.id, index, tenant=book.tenant, versions=run.versions
        )
        request = request.model_copy(update={"max_parallel": run.versions})
        job.emit(
            "book.context",
            run_id=run.id,
            chapter=index,
            tokens=pack.tokens,
            budget=pack.budget,
            sections={s.name: s.tokens for s in pack.sections},
            dropped=pack.dropped,
        )
        result = await run_chapter(
            request,
            run_id=job.id,
            services=services,
            sink=job.ctx.sink,
            checkpoints=job.ctx.checkpoints,
            coalesce=job.services.pacing,
        )
    except Exception as exc:
        if _budget_refusal(exc):
            return await _stop(
                job,
                control,
                run,
                "cost_cap",
                f"chapter {index} was stopped before the run's ${run.cost_cap_usd:.4f} cap: {exc}",
            )
        raise
    stored = await projects.save_versions(chapter.id, job.id, _versions(result), summary=None)
    judge_pick = next((v for v in stored if v.scores.get("judge_pick")), stored[0] if stored else None)
    if run.chooser is Chooser.AUTHOR or judge_pick is None:
        entry = await _entry(job, started, result, pack.tokens, pack.budget)
        moved = await control.runs.update(
            run.id,
            when=(RunStatus.RUNNING, RunStatus.PAUSED),
            chapter_is=index,
            progress={str(index): {**entry, "awaiting": True}},
            status=RunStatus.WAITING,
        )
        if moved is not None:
            job.emit("book.waiting", run_id=run.id, chapter=index, versions=len(stored))
        return {"run_id": run.id, "chapter": index, "outcome": "waiting for the author's choice"}
    await projects.choose_version(chapter.id, judge_pick.id)
    summary = judge_pick.scores.get("summary")
    await set_summary(job.db, chapter.id, summary if isinstance(summary, str) and summary else None)
    await control.staleness.written(chapter.id, book.id, index, memory_fresh=False)
    try:
        await _remember(job, control, books, book.id, index, services)
    except Exception as exc:
        if not _budget_refusal(exc):
            raise
        return await _stop(
            job,
            control,
            run,
            "cost_cap",
            f"chapter {index}'s memory was not extracted before the run's cap: {exc}",
        )
    entry = await _entry(job, started, result, pack.tokens, pack.budget)
    moved = await control.runs.update(
        run.id,
        when=(RunStatus.RUNNING, RunStatus.PAUSED),
        chapter_is=index,
        chapter=index + 1,
        progress={str(index): entry},
    )
    if moved is None:  # cancelled meanwhile: the versions stay, the run does not go on
        return {"run_id": run.id, "chapter": index, "outcome": "written; the run was cancelled"}
    job.emit(
        "book.progress",
        run_id=run.id,
        chapter=index,
        of=moved.of,
        done=moved.done,
        tokens=moved.tokens,
        cost_usd=round(moved.cost_usd, 6),
        eta_s=moved.eta_s(),
        phase="chosen",
    )
    await control.advance(moved)
    return {"run_id": run.id, "chapter": index, "outcome": "chosen", "version_id": judge_pick.id, **entry}
