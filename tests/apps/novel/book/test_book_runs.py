"""Book runs on the real engine: a worker with one slot, the gateway, the simulator over loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.book.control import BookControl
from storyloom.apps.novel.book.runs import BookRun, Chooser, RunStatus
from storyloom.apps.novel.projects import Project, ProjectStore
from storyloom.config import Settings
from storyloom.jobs import JobQueue
from storyloom.jobs.usage import job_usage
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.llm.factory import build_client
from storyloom.registry import AppRegistry
from storyloom.runner import WorkerServices, app_handlers
from storyloom.store import Database


@dataclass
class Bench:
    db: Database
    queue: JobQueue
    control: BookControl
    worker: Worker
    book: Project

    async def until(self, run_id: str, done: Callable[[BookRun], bool], timeout_s: float = 60.0) -> BookRun:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = await self.control.runs.get(run_id)
            assert run is not None
            if done(run):
                return run
            await asyncio.sleep(0.05)
        raise AssertionError(f"run {run_id} did not get there: {await self.control.runs.get(run_id)}")


async def make_book(db: Database, chapters: int, *, tenant: str = "default") -> Project:
    store = ProjectStore(db)
    book = await store.create_project(
        tenant=tenant,
        title="The Salt Road",
        premise="A courier crosses a desert.",
        language="en",
        genre="adventure",
    )
    for n in range(1, chapters + 1):
        await store.upsert_chapter(
            book.id, index=n, title=f"Chapter {n}", outline=f"The courier reaches oasis {n}."
        )
    return book


@pytest.fixture
async def bench(tmp_path: Path, sim: Any) -> AsyncIterator[Bench]:
    registry = AppRegistry.discover()
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'book.db'}")
    await db.migrate(registry.migrations())
    queue = JobQueue(db)
    settings = Settings(_env_file=None, profile="sim", limits_url="memory://")  # type: ignore[call-arg]
    client = build_client(settings, sim_url=sim.url)
    services = WorkerServices(
        db=db, registry=registry, client=client, models=AgentModels(default="sim-writer")
    )
    worker = Worker(
        db,
        app_handlers(registry),
        config=WorkerConfig(concurrency=1, heartbeat_s=0.2, poll_s=0.05, schedule_every_s=None),
        services=services,
        queue=queue,
    )
    task = asyncio.create_task(worker.run())
    book = await make_book(db, 4)
    try:
        yield Bench(db, queue, BookControl(db, queue), worker, book)
    finally:
        worker.stop()
        await task
        await client.aclose()
        await db.close()


async def test_a_book_runs_to_the_end_on_one_worker_slot(bench: Bench) -> None:
    """The parent-holds-the-only-slot deadlock: with concurrency 1 the whole book still gets written."""
    run = await bench.control.start(bench.book, first=1, last=3, versions=2, chooser=Chooser.JUDGE)
    done = await bench.until(run.id, lambda r: r.status.is_terminal)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.done == 3 and done.cost_usd > 0 and done.tokens > 0
    chapters = await ProjectStore(bench.db).list_chapters(bench.book.id)
    for chapter in chapters[:3]:
        versions = await ProjectStore(bench.db).list_versions(chapter.id)
        assert len(versions) == 2
        chosen = [v for v in versions if v.chosen]
        assert len(chosen) == 1 and chapter.current_version_id == chosen[0].id  # the judge's pick is stored
        assert chosen[0].scores["judge_pick"] and chapter.summary
    assert chapters[3].current_version_id is None  # not in the run


async def test_the_run_waits_for_the_author_without_a_slot(bench: Bench) -> None:
    run = await bench.control.start(bench.book, first=1, last=2, versions=2, chooser=Chooser.AUTHOR)
    waiting = await bench.until(run.id, lambda r: r.status is RunStatus.WAITING)
    assert waiting.chapter == 1
    await asyncio.sleep(0.3)
    assert bench.worker.running == 0  # nothing holds the worker's only slot while the author reads
    store = ProjectStore(bench.db)
    first = (await store.list_chapters(bench.book.id))[0]
    versions = await store.list_versions(first.id)
    await bench.control.choose(bench.book, first, versions[1])
    moved = await bench.until(run.id, lambda r: r.status is RunStatus.WAITING and r.chapter == 2)
    assert moved.done == 2
    assert (await store.get_chapter(first.id)).current_version_id == versions[1].id  # type: ignore[union-attr]


async def test_pause_resume_and_cancel(bench: Bench) -> None:
    run = await bench.control.start(bench.book, first=1, last=4, versions=1, chooser=Chooser.JUDGE)
    await bench.until(run.id, lambda r: r.done >= 1)
    paused = await bench.control.pause(await bench.control.runs.get(run.id))  # type: ignore[arg-type]
    assert paused.status is RunStatus.PAUSED
    still = await bench.until(run.id, lambda r: r.job_id is not None and bench.worker.running == 0, 30)
    at = still.done
    await asyncio.sleep(0.3)
    assert (await bench.control.runs.get(run.id)).done == at  # type: ignore[union-attr]
    resumed = await bench.control.resume(still)
    assert resumed.status is RunStatus.RUNNING
    await bench.until(run.id, lambda r: r.done > at)
    cancelled = await bench.control.cancel(await bench.control.runs.get(run.id))  # type: ignore[arg-type]
    assert cancelled.status is RunStatus.CANCELLED
    with pytest.raises(Exception, match="cancelled already"):
        await bench.control.cancel(cancelled)


async def test_the_cost_cap_stops_the_run_before_it(bench: Bench) -> None:
    free = await bench.control.start(bench.book, first=1, last=1, versions=1, chooser=Chooser.JUDGE)
    one = (await bench.until(free.id, lambda r: r.status.is_terminal)).cost_usd
    cap = one * 1.5  # room for one or two chapters, not three
    run = await bench.control.start(
        bench.book, first=2, last=4, versions=1, chooser=Chooser.JUDGE, cost_cap_usd=cap
    )
    done = await bench.until(run.id, lambda r: r.status.is_terminal)
    assert done.status is RunStatus.STOPPED and done.stop_reason == "cost_cap", done
    # Everything the run's jobs spent, the stopped chapter's calls included, stays under the cap.
    job_ids = [str(p["job_id"]) for p in done.progress.values()]
    assert len(job_ids) >= 1
    spent = sum(u.cost_usd for u in (await job_usage(bench.db, job_ids)).values())
    assert 0 < spent <= cap and abs(spent - done.cost_usd) < 1e-6
    assert 1 <= done.done < 3


async def test_a_list_of_chapters_book_job_finishes_on_one_slot(bench: Bench) -> None:
    """The older `novel.book` payload: its parent waits for its children without holding the slot."""
    chapter = {
        "chapter_outline": "The courier meets a caravan.",
        "language": "en",
        "target_length": 200,
        "versions": 1,
    }
    job = await bench.queue.submit(
        "novel.book", {"chapters": [chapter, {**chapter, "chapter_outline": "A storm."}]}
    )
    deadline = time.monotonic() + 90
    while not (found := await bench.queue.get(job.id)).status.is_terminal:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)
    assert found.status.value == "completed", found.error
    kids = await bench.queue.children(job.id)
    assert len(kids) == 2 and all(k.status.value == "completed" for k in kids)
    kinds = [e.kind for e in await bench.queue.events(job.id, limit=1000)]
    assert "job.waiting" in kinds and "job.resumed" in kinds
