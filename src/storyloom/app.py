"""The wiring: which handler runs which job kind, and the services a worker process shares.

`chapter` writes one chapter with `novel.chapter.write_chapter` (durable sink and checkpoints, the
job id as run id) and stores its versions when the job belongs to a project chapter. `book` is a
parent that enqueues its chapters as children, each waiting for (`depends_on`) the previous one
and receiving its summary. `retention` and `cost_rollup` are the periodic housekeeping jobs.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from storyloom.errors import InputError, StoryloomError
from storyloom.flow import DeltaPacing
from storyloom.jobs.context import Handler, JobContext
from storyloom.jobs.maintenance import cleanup, record_usage, rollup_costs
from storyloom.jobs.models import JobStatus
from storyloom.jobs.schedule import ensure_schedule
from storyloom.store.database import Database

if TYPE_CHECKING:
    from storyloom.apps.novel.agents import AgentModels
    from storyloom.config import Settings
    from storyloom.llm.types import ModelClient

__all__ = [
    "AppServices",
    "MaintenancePolicy",
    "build_services",
    "default_handlers",
    "install_schedules",
    "warm_up",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenancePolicy:
    events_ttl_s: float = 7 * 86_400.0  # events and checkpoints of finished jobs
    jobs_ttl_s: float = 30 * 86_400.0  # the finished jobs themselves
    retention_every_s: float = 3600.0
    rollup_every_s: float = 900.0


@dataclass(slots=True)
class AppServices:
    """Shared by every run of a worker process: one model client (and its connection pool)."""

    db: Database
    settings: Settings | None = None
    client: ModelClient | None = None
    models: AgentModels | None = None
    maintenance: MaintenancePolicy = field(default_factory=MaintenancePolicy)
    book_poll_s: float = 1.0
    pacing: DeltaPacing = field(default_factory=DeltaPacing)  # every run's deltas, together

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def warm_up() -> None:
    """Import what the handlers import lazily, before the first job: a first chapter job otherwise
    pays ~0.1 s of imports on the event loop while hundreds of others are starting."""


def build_services(db: Database, settings: Settings, *, sim_url: str | None = None) -> AppServices:
    from storyloom.apps.novel.agents import AgentModels
    from storyloom.llm.factory import build_client

    return AppServices(
        db=db,
        settings=settings,
        client=build_client(settings, sim_url=sim_url),
        models=AgentModels.from_settings(settings),
        pacing=DeltaPacing(
            max_events_per_s=settings.delta_events_per_s, max_interval_s=settings.delta_max_interval_s
        ),
    )


async def install_schedules(db: Database, policy: MaintenancePolicy | None = None) -> None:
    policy = policy or MaintenancePolicy()
    await ensure_schedule(db, "retention", "retention", {}, interval_s=policy.retention_every_s)
    await ensure_schedule(db, "cost_rollup", "cost_rollup", {}, interval_s=policy.rollup_every_s)


def default_handlers() -> dict[str, Handler]:
    return {
        "chapter": chapter_handler,
        "book": book_handler,
        "retention": retention_handler,
        "cost_rollup": cost_rollup_handler,
    }


def _services(ctx: JobContext) -> AppServices:
    if not isinstance(ctx.services, AppServices):
        raise RuntimeError("the worker was started without AppServices")
    return ctx.services


async def chapter_handler(ctx: JobContext) -> dict[str, Any]:
    from pydantic import ValidationError

    from storyloom.apps.novel.chapter import write_chapter
    from storyloom.apps.novel.models import ChapterRequest, input_error

    services = _services(ctx)
    if services.client is None or services.models is None:
        raise RuntimeError("chapter jobs need a model client; the worker has none")
    payload = dict(ctx.payload)
    project_id = payload.pop("project_id", None)
    chapter_id = payload.pop("chapter_id", None)
    try:
        request = ChapterRequest.model_validate(payload)
    except ValidationError as exc:
        raise input_error(exc, "chapter job") from exc
    if request.previous_summary is None and ctx.job.depends_on:
        previous = await ctx.queue.get(ctx.job.depends_on)
        summary = (previous.result or {}).get("summary")
        if isinstance(summary, str) and summary:
            request = request.model_copy(update={"previous_summary": summary[:5000]})
    result = await write_chapter(
        request,
        client=services.client,
        models=services.models,
        run_id=ctx.run_id,
        sink=ctx.sink,
        checkpoints=ctx.checkpoints,
        tenant=ctx.job.tenant,
        priority=ctx.job.priority,
        coalesce=services.pacing,
    )
    out: dict[str, Any] = result.model_dump(mode="json")
    if isinstance(chapter_id, str):
        await _store_versions(services.db, chapter_id, ctx.job.id, out)
    await _record_usage(services.db, ctx, out)
    if project_id is not None:
        out["project_id"], out["chapter_id"] = project_id, chapter_id
    return out


async def _store_versions(db: Database, chapter_id: str, job_id: str, result: Mapping[str, Any]) -> None:
    from storyloom.apps.novel.projects import ProjectStore, versions_from_result

    store = ProjectStore(db)
    if await store.get_chapter(chapter_id) is None:
        return  # deleted while the job ran
    versions, summary = versions_from_result(result)
    await store.save_versions(chapter_id, job_id, versions, summary=summary)


async def _record_usage(db: Database, ctx: JobContext, result: Mapping[str, Any]) -> None:
    """One usage row per model for the daily cost roll-up, priced from the bundled price table."""
    runs: list[Mapping[str, Any]] = []
    if isinstance(result.get("director"), Mapping):
        runs.append(result["director"])
    for version in result.get("versions") or []:
        runs.extend(a for a in version.get("agents") or [] if isinstance(a, Mapping))
    per_model: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for run in runs:
        usage = run.get("usage") or {}
        acc = per_model[str(run.get("model") or "unknown")]
        acc[0] += int(run.get("calls") or 0)
        acc[1] += int(usage.get("prompt_tokens") or 0)
        acc[2] += int(usage.get("completion_tokens") or 0)
    prices = _price_table()
    for model, (calls, prompt, completion) in per_model.items():
        if not (calls or prompt or completion):
            continue
        cost = 0.0
        if prices is not None:
            from storyloom.llm.types import Usage

            cost = prices.cost(Usage(prompt_tokens=prompt, completion_tokens=completion), model) or 0.0
        await record_usage(
            db,
            tenant=ctx.job.tenant,
            model=model,
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
            job_id=ctx.job.id,
        )


def _price_table() -> Any:
    try:
        from storyloom.llm.ledger import PriceTable

        return PriceTable.bundled()
    except (ImportError, OSError, KeyError, ValueError):
        return None


async def book_handler(ctx: JobContext) -> dict[str, Any]:
    """Enqueue the chapters as children (idempotently, so a re-run finds them) and wait for them."""
    chapters = ctx.payload.get("chapters")
    if not isinstance(chapters, list) or not chapters:
        raise InputError("a book job needs a non-empty list 'chapters' of chapter requests.")
    services = _services(ctx)
    child_ids: list[str] = []
    previous: str | None = None
    for i, chapter in enumerate(chapters, start=1):
        if not isinstance(chapter, dict):
            raise InputError(f"chapter {i} of the book is not an object.")
        child = await ctx.queue.submit(
            "chapter",
            chapter,
            priority=ctx.job.priority,
            idempotency_key=f"book:{ctx.job.id}:chapter:{i}",
            tenant=ctx.job.tenant,
            parent_id=ctx.job.id,
            depends_on=previous,
        )
        child_ids.append(child.id)
        previous = child.id
    ctx.emit("book.chapters", job_ids=child_ids)
    done: set[str] = set()
    while True:
        kids = {k.id: k for k in await ctx.queue.children(ctx.job.id)}
        for cid in child_ids:
            kid = kids.get(cid)
            if kid is not None and kid.status.is_terminal and cid not in done:
                done.add(cid)
                ctx.emit("book.chapter_done", job_id=cid, status=kid.status.value)
        if len(done) == len(child_ids):
            break
        await asyncio.sleep(services.book_poll_s)
    failed = [cid for cid in child_ids if kids[cid].status is not JobStatus.COMPLETED]
    if failed:
        raise StoryloomError(
            f"{len(failed)} of {len(child_ids)} chapters did not complete: {failed[0]} first"
        )
    return {
        "chapters": [
            {"job_id": cid, "summary": (kids[cid].result or {}).get("summary", ""), "status": "completed"}
            for cid in child_ids
        ]
    }


async def retention_handler(ctx: JobContext) -> dict[str, Any]:
    policy = _services(ctx).maintenance
    return await cleanup(ctx.queue.db, events_ttl_s=policy.events_ttl_s, jobs_ttl_s=policy.jobs_ttl_s)


async def cost_rollup_handler(ctx: JobContext) -> dict[str, Any]:
    rows = await rollup_costs(ctx.queue.db)
    return {"rows": len(rows)}
