"""`storyloom jobs list|show|retry|cancel`: the queue from the terminal, dead letters included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

__all__ = ["register"]

T = TypeVar("T")


def _with_queue(data_dir: Path | None, database_url: str | None, fn: Callable[[Any], Awaitable[T]]) -> T:
    from storyloom.commands._settings import load_settings
    from storyloom.jobs.queue import JobQueue
    from storyloom.registry import installed_apps
    from storyloom.store.database import Database

    settings = load_settings(data_dir=data_dir, database_url=database_url)

    async def go() -> T:
        db = Database.from_url(settings.resolved_database_url())
        try:
            await db.migrate(installed_apps().migrations())
            return await fn(JobQueue(db))
        finally:
            await db.close()

    return asyncio.run(go())


def _line(job: Any) -> str:
    err = f"  {job.error[:80]}" if job.error else ""
    state = f"{job.status.value:<10} p{job.priority} {job.tenant:<10} a{job.attempts}"
    return f"{job.id}  {job.kind:<12} {state}{err}"


def register(app: typer.Typer) -> None:
    jobs_app = typer.Typer(help="List, inspect, retry and cancel jobs.", no_args_is_help=True)
    app.add_typer(jobs_app, name="jobs")
    DataDir = typer.Option(None, "--data-dir", help="Directory of the embedded database.")
    DbUrl = typer.Option(None, "--database-url", help="sqlite+aiosqlite:///… or postgresql+asyncpg://…")

    @jobs_app.command("list")
    def list_cmd(
        status: list[str] = typer.Option([], "--status", help="Only these states (repeatable)."),
        kind: list[str] = typer.Option([], "--kind", help="Only these kinds (repeatable)."),
        limit: int = typer.Option(50, min=1, max=500),
        offset: int = typer.Option(0, min=0),
        as_json: bool = typer.Option(False, "--json"),
        data_dir: Path | None = DataDir,
        database_url: str | None = DbUrl,
    ) -> None:
        """Newest first; `--status failed` lists the dead letters."""
        from storyloom.jobs.admin import list_jobs

        page = _with_queue(
            data_dir,
            database_url,
            lambda q: list_jobs(q, statuses=status, kinds=kind, limit=limit, offset=offset),
        )
        if as_json:
            typer.echo(
                json.dumps({"total": page.total, "jobs": [j.to_dict() for j in page.jobs]}, default=str)
            )
            return
        for job in page.jobs:
            typer.echo(_line(job))
        typer.echo(f"{len(page.jobs)} of {page.total}", err=True)

    @jobs_app.command("show")
    def show(job_id: str, data_dir: Path | None = DataDir, database_url: str | None = DbUrl) -> None:
        """Everything about one job, as JSON."""
        typer.echo(
            json.dumps(
                _with_queue(data_dir, database_url, lambda q: q.get(job_id)).to_dict(),
                default=str,
                ensure_ascii=False,
                indent=2,
            )
        )

    @jobs_app.command("retry")
    def retry(job_id: str, data_dir: Path | None = DataDir, database_url: str | None = DbUrl) -> None:
        """Queue a failed or cancelled job again (its finished steps are kept)."""
        from storyloom.jobs.admin import retry_job

        typer.echo(_line(_with_queue(data_dir, database_url, lambda q: retry_job(q, job_id))))

    @jobs_app.command("cancel")
    def cancel(job_id: str, data_dir: Path | None = DataDir, database_url: str | None = DbUrl) -> None:
        """Cancel a queued job now, a running one within its worker's next heartbeat."""
        typer.echo(_line(_with_queue(data_dir, database_url, lambda q: q.cancel(job_id))))
