"""The writing application: chapter agents, the chapter flow with versions and judging, books.

The public surface is small on purpose: build a `ChapterRequest`, call `write_chapter` with a
`ModelClient` and `AgentModels`, read the `ChapterResult` (or override its choice). As an app on
the engine (`app` below) it runs chapters and books as durable jobs, serves the seed's
`/api/novel/*` routes and the projects API, and adds `storyloom write` to the CLI.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from storyloom.app import App, AppTables
from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.chapter import choose_version, run_chapter, write_chapter
from storyloom.apps.novel.length import count_length, length_score
from storyloom.apps.novel.models import (
    AgentRun,
    ChapterInput,
    ChapterRequest,
    ChapterResult,
    Character,
    Degradation,
    JudgeMatch,
    JudgeReport,
    NovelInput,
    VersionResult,
)

__all__ = [
    "AgentModels",
    "AgentRun",
    "ChapterInput",
    "ChapterRequest",
    "ChapterResult",
    "Character",
    "Degradation",
    "JudgeMatch",
    "JudgeReport",
    "NovelInput",
    "VersionResult",
    "app",
    "choose_version",
    "count_length",
    "length_score",
    "run_chapter",
    "write_chapter",
]


def _from_messages(messages: Sequence[Mapping[str, Any]]) -> ChapterInput:
    """As a chat model: the last user message is the chapter outline, earlier ones the story so far."""
    from storyloom.errors import InputError

    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    if not users or not users[-1].strip():
        raise InputError("the conversation has no user message to write a chapter from.")
    story = "\n\n".join(users[:-1])[-20000:]
    return ChapterInput(chapter_outline=users[-1], overall_outline=story, versions=1)


def _routes() -> Any:
    from storyloom.apps.novel.routes import router

    return router


def _cli(app: Any) -> None:
    from storyloom.apps.novel.book.cli import register as register_book
    from storyloom.apps.novel.cli import register

    register(app)
    register_book(app)


# The job handlers import the store and the runner: loaded on the first job, not by `--help`.
async def _chapter(job: Any) -> ChapterResult:
    from storyloom.apps.novel.jobs import chapter_job

    return await chapter_job(job)


async def _book(job: Any) -> dict[str, Any]:
    """A book run's chapter (`{"run_id", "chapter"}`: apps/novel/book/), or the older
    list-of-chapters payload (`{"chapters": [...]}`)."""
    if "run_id" in job.payload:
        from storyloom.apps.novel.book.job import book_chapter_job

        return await book_chapter_job(job)
    from storyloom.apps.novel.jobs import book_job

    return await book_job(job)


async def _plan(job: Any) -> dict[str, Any]:
    from storyloom.apps.novel.book.plan import plan_job

    return await plan_job(job)


async def _rewrite(job: Any) -> dict[str, Any]:
    from storyloom.apps.novel.book.rewrite import rewrite_job

    return await rewrite_job(job)


async def _remember(job: Any) -> dict[str, Any]:
    from storyloom.apps.novel.book.rewrite import remember_job

    return await remember_job(job)


app: App[ChapterInput] = App(
    name="novel",
    title="Novel chapter",
    description="One chapter: a shared plan, N candidate versions written in parallel, a judge picks one.",
    input=ChapterInput,
    handler=_chapter,
    text=lambda result: result.text if isinstance(result, ChapterResult) else str(result.get("text", "")),
    from_messages=_from_messages,
    routes=_routes,
    tables=AppTables(migrations=Path(__file__).with_name("migrations")),
    jobs={"book": _book, "plan": _plan, "rewrite": _rewrite, "remember": _remember},
    cli=_cli,
)
