"""The real chapter and book handlers against the simulator over loopback HTTP (SQLite)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.projects import ProjectStore
from storyloom.jobs import JobQueue, JobStatus
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.llm.client import HttpModelClient
from storyloom.registry import AppRegistry
from storyloom.runner import WorkerServices, app_handlers
from storyloom.store import Database
from storyloom.store.schema import usage


def chapter_request(outline: str, *, versions: int = 2) -> dict[str, Any]:
    """A novel job's input: the chapter's fields and its options, flat."""
    return {
        "chapter_outline": outline,
        "genre": "武侠",
        "target_length": 300,
        "language": "zh",
        "versions": versions,
        "max_parallel": 2,
    }


async def _until_terminal(queue: JobQueue, ids: list[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all([(await queue.get(i)).status.is_terminal for i in ids]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("jobs did not finish in time")


async def test_chapter_and_book_jobs_run_for_real(tmp_path: Path, sim: Any) -> None:
    registry = AppRegistry.discover()
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.migrate(registry.migrations())
    queue = JobQueue(db)
    client = HttpModelClient(sim.url, None, connect_timeout_s=5, ttft_timeout_s=30, total_timeout_s=60)
    services = WorkerServices(
        db=db, registry=registry, client=client, models=AgentModels(default="sim-writer")
    )
    store = ProjectStore(db)
    project = await store.create_project(title="剑", premise="少年学剑")
    chapter = await store.upsert_chapter(project.id, index=1, title="第一章", outline="拜师")
    one = await queue.submit(
        "novel",
        {"input": chapter_request("拜师"), "project_id": project.id, "chapter_id": chapter.id},
        tenant="t1",
    )
    book = await queue.submit("novel.book", {"chapters": [chapter_request("下山"), chapter_request("比武")]})
    worker = Worker(
        db,
        app_handlers(registry),
        config=WorkerConfig(concurrency=10, heartbeat_s=0.2, poll_s=0.05, schedule_every_s=None),
        services=services,
        queue=queue,
    )
    task = asyncio.create_task(worker.run())
    try:
        await _until_terminal(queue, [one.id, book.id])
    finally:
        worker.stop()
        await task
        await client.aclose()
    done = await queue.get(one.id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.result is not None
    chapter_result = done.result["result"]
    assert len(chapter_result["versions"]) == 2 and chapter_result["summary"]
    assert done.result["text"] == chapter_result["versions"][chapter_result["chosen"] - 1]["text"]
    versions = await store.list_versions(chapter.id)
    assert len(versions) == 2 and all(v.job_id == one.id and v.text for v in versions)
    kinds = [e.kind for e in await queue.events(one.id, limit=10_000)]
    assert kinds[:2] == ["job.submitted", "job.started"] and kinds[-1] == "job.completed"
    assert "step.finished" in kinds
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(usage).where(usage.c.job_id == one.id))).all()
    assert rows and all(r.tenant == "t1" and r.prompt_tokens > 0 and r.step for r in rows)
    # Every call counts, the judge's included: one usage row per model call, summed into the result.
    assert sum(r.calls for r in rows) == done.result["usage"]["calls"]
    assert any(r.step.startswith("judge/") for r in rows)
    assert done.result["usage"]["total_tokens"] == sum(r.prompt_tokens + r.completion_tokens for r in rows)

    finished_book = await queue.get(book.id)
    assert finished_book.status is JobStatus.COMPLETED, finished_book.error
    kids = await queue.children(book.id)
    assert len(kids) == 2 and kids[1].depends_on == kids[0].id
    assert all(k.status is JobStatus.COMPLETED for k in kids)
    assert kids[0].finished_at is not None and kids[1].started_at is not None
    assert kids[1].started_at >= kids[0].finished_at  # waited for the previous chapter
    assert kids[1].result is not None and kids[0].result is not None
    await db.close()
