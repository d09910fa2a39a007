"""Helpers shared by the API tests (a module of its own: importing from conftest breaks across dirs)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from storyloom.api.app import create_app
from storyloom.api.services import ApiOptions
from storyloom.api.tenant_limits import BudgetCheck
from storyloom.config import Settings
from storyloom.jobs.queue import JobQueue
from storyloom.registry import AppRegistry
from storyloom.store.database import Database
from storyloom.store.keys import KeyStore

# Apps this process is serving now. Each one's lifespan builds its OpenAPI document in a thread
# (api/app.py) under FastAPI's `warnings.catch_warnings()`, which swaps the process-wide filter
# list and is not thread-safe: a second app's route warm-up on the loop at that moment can lose
# its own "ignore" and meet pydantic's UnsupportedFieldAttributeWarning as an error (pytest runs
# with warnings as errors): the second server then fails to start, now and then, on a busy machine.
_LIVE_APPS: list[FastAPI] = []


async def _openapi_settled(apps: list[FastAPI], timeout_s: float = 60.0) -> None:
    """Wait for the documents of the apps already served to be built (one server alone waits for
    nothing); past the timeout, go on (a failed build would show in the tests of the document)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while any(app.openapi_schema is None for app in apps):
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    client: httpx.AsyncClient
    db: Database
    queue: JobQueue  # its own handle on the database, to act as a worker in tests
    app: FastAPI


@asynccontextmanager
async def serve_app(
    data_dir: Path,
    options: ApiOptions | None = None,
    *,
    database: Database | None = None,
    registry: AppRegistry | None = None,
    extend: Callable[[FastAPI], None] | None = None,
    budget_check: BudgetCheck | None = None,
    **settings_fields: object,
) -> AsyncIterator[Served]:
    """create_app on uvicorn (127.0.0.1, free port) in this event loop, plus a client and a queue.

    `extend(app)` may add routes first (to raise what no real route can raise yet);
    `settings_fields`: Settings fields (e.g. tenant_limits, cors_origins), as the environment would."""
    settings = Settings(data_dir=data_dir, _env_file=None, **settings_fields)  # type: ignore[call-arg]
    # Before create_app: building routes makes pydantic schemas, whose warning filters the other
    # app's OpenAPI thread may be swapping at that moment (catch_warnings is process-wide).
    await _openapi_settled(list(_LIVE_APPS))
    app = create_app(
        settings,
        registry=registry or AppRegistry.discover(),
        options=options or ApiOptions(heartbeat_s=0.5),
        database=database,
        budget_check=budget_check,
    )
    if extend is not None:
        extend(app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    db = database or Database.from_url(settings.resolved_database_url())
    url = f"http://127.0.0.1:{port}"
    _LIVE_APPS.append(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Served(url=url, client=client, db=db, queue=JobQueue(db), app=app)
    finally:
        _LIVE_APPS.remove(app)
        server.should_exit = True
        await task
        if database is None:
            await db.close()


@dataclass
class Keys:
    """API keys of a test: two members of different tenants, an operator, and a revoked key."""

    alice: str
    bob: str
    admin: str
    revoked: str
    store: KeyStore

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, who)}"}

    @classmethod
    async def make(cls, db: Database) -> Keys:
        store = KeyStore(db)
        _, alice = await store.create(tenant="alice")
        _, bob = await store.create(tenant="bob")
        _, admin = await store.create(tenant="ops", role="admin")
        gone, revoked = await store.create(tenant="alice")
        await store.revoke(gone.id)
        return cls(alice=alice, bob=bob, admin=admin, revoked=revoked, store=store)


def novel_input(outline: str = "Lin meets the old swordsman at the ferry.") -> dict[str, object]:
    return {
        "overall_outline": "A young courier learns the sword.",
        "chapter_outline": outline,
        "genre": "wuxia",
        "characters": [{"name": "Lin", "role": "courier"}],
        "style": "terse",
        "target_length": 300,
        "language": "en",
    }


class ActingWorker:
    """Plays a worker with the queue's own worker calls, to drive jobs step by step in tests."""

    def __init__(self, served: Served, name: str = "test-worker") -> None:
        from storyloom.jobs.durable import GroupCommitWriter

        self.served = served
        self.name = name
        self.writer = GroupCommitWriter(served.db)
        self.owned: set[str] = set()

    async def claim(self, job_id: str) -> None:
        """Claim every due job (as a worker would) and check this one is among them."""
        claimed = await self.served.queue.claim(self.name, limit=100, lease_s=60)
        self.owned |= {j.id for j in claimed}
        assert job_id in self.owned

    async def emit(self, job_id: str, kind: str, step: str | None = None, **data: object) -> None:
        from storyloom.jobs.durable import JobEventSink

        sink = await JobEventSink.open(self.served.db, self.writer, job_id)
        sink.append(kind, dict(data), step=step)
        await self.writer.flush()

    async def complete(self, job_id: str, result: dict[str, object]) -> None:
        """Like the real chapter handler: a project chapter's versions are stored, then completed."""
        from storyloom.apps.novel.projects import ProjectStore, versions_from_result

        job = await self.served.queue.get(job_id)
        chapter_id = job.payload.get("chapter_id")
        if isinstance(chapter_id, str):
            versions, summary = versions_from_result(result)
            await ProjectStore(self.served.db).save_versions(chapter_id, job_id, versions, summary=summary)
        if job.kind == "novel":  # the runner's envelope around the app's result
            chosen = result["versions"][int(result["chosen"]) - 1]  # type: ignore[index]
            usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            result = {"result": result, "text": chosen["text"], "usage": usage, "degraded": []}
        assert await self.served.queue.complete(job_id, self.name, result)

    async def close(self) -> None:
        await self.writer.stop()


def chapter_result(texts: list[str], chosen: int = 1) -> dict[str, object]:
    """A result shaped like novel's ChapterResult.model_dump(mode='json')."""
    return {
        "run_id": "r",
        "language": "en",
        "target_length": 300,
        "versions": [
            {
                "index": i,
                "style_hint": "plain",
                "ok": True,
                "text": t,
                "quality_score": 70 + i,
                "length": len(t),
            }
            for i, t in enumerate(texts, start=1)
        ],
        "chosen": chosen,
        "chosen_by": "judge",
        "summary": "Lin met the swordsman.",
        "elapsed_s": 1.5,
    }


@asynccontextmanager
async def running_worker(served: Served, registry: AppRegistry, sim_url: str) -> AsyncIterator[Any]:
    """A real worker in this event loop running the registry's apps against the simulator."""
    from storyloom.agents import ModelChoice
    from storyloom.jobs.worker import Worker, WorkerConfig
    from storyloom.llm.client import HttpModelClient
    from storyloom.runner import WorkerServices, app_handlers

    client = HttpModelClient(sim_url, None, connect_timeout_s=5, ttft_timeout_s=30, total_timeout_s=60)
    services = WorkerServices(
        db=served.db, registry=registry, client=client, models=ModelChoice(default="sim-writer")
    )
    worker = Worker(
        served.db,
        app_handlers(registry),
        config=WorkerConfig(concurrency=50, heartbeat_s=0.2, poll_s=0.05, schedule_every_s=None),
        services=services,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await task
        await client.aclose()


async def submit_chapter(api: Served, tenant: str) -> str:
    """Queue a chapter job as `tenant` (no worker runs it: its stream stays open); its id."""
    r = await api.client.post(
        "/api/novel/generate", json={"novel_input": novel_input()}, headers={"X-Tenant": tenant}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["task_id"])
