"""The `novel.plan` job: a new book's bible and outline (the data layer's `plan_book`), stored.

The outline's chapters become the book's `chapters` rows (number, title, summary as the chapter's
outline), so `book write` and the studio see them at once.
"""

from __future__ import annotations

from typing import Any

from storyloom.apps.novel.bookstore import BookStore
from storyloom.apps.novel.outline import BookPlan, BookPlanRequest, plan_book
from storyloom.apps.novel.projects import ProjectStore
from storyloom.errors import InputError
from storyloom.runner import AppJob

__all__ = ["PLAN_JOB_KIND", "plan_job", "save_plan"]

PLAN_JOB_KIND = "novel.plan"


async def save_plan(job: AppJob[Any], book_id: str, tenant: str, plan: BookPlan) -> None:
    if await BookStore(job.db).save_plan(book_id, plan, tenant=tenant) is None:
        raise InputError(f"book {book_id!r} no longer exists.")


async def plan_job(job: AppJob[Any]) -> dict[str, Any]:
    book_id = job.payload.get("book_id")
    if not isinstance(book_id, str):
        raise InputError("a plan job needs 'book_id'.")
    request = BookPlanRequest.model_validate(job.payload.get("request") or {})
    book = await ProjectStore(job.db).get_project(book_id, tenant=job.tenant)
    if book is None:
        raise InputError(f"book {book_id!r} no longer exists.")
    plan = await plan_book(
        request,
        run_id=job.id,
        services=job.run_services(language=request.language),
        sink=job.ctx.sink,
        checkpoints=job.ctx.checkpoints,
    )
    await save_plan(job, book_id, job.tenant, plan)
    job.degraded.extend({"step": "plan", "reason": d} for d in plan.degraded)
    job.emit("book.planned", book_id=book_id, chapters=len(plan.outline.chapters), ok=plan.coverage.ok)
    return {
        "book_id": book_id,
        "chapters": len(plan.outline.chapters),
        "coverage": plan.coverage.model_dump(mode="json"),
        "usage": plan.model_dump(mode="json")["usage"],
        "cost_usd": plan.cost_usd,
        "cache_hit_share": plan.cache_hit_share,
        "degraded": plan.degraded,
    }
