"""Helpers shared by the API tests (a module of its own: importing from conftest breaks across dirs)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from storyloom.api.app import create_app
from storyloom.api.services import ApiOptions
from storyloom.api.tenant_limits import BudgetCheck
from storyloom.config import Settings
from storyloom.jobs.queue import JobQueue
from storyloom.store.database import Database
from storyloom.store.keys import KeyStore


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
    budget_check: BudgetCheck | None = None,
    **settings_fields: object,
) -> AsyncIterator[Served]:
    """create_app on uvicorn (127.0.0.1, free port) in this event loop, plus a client and a queue.

    `settings_fields`: Settings fields (e.g. tenant_limits, cors_origins), as the environment would."""
    settings = Settings(data_dir=data_dir, _env_file=None, **settings_fields)  # type: ignore[call-arg]
    app = create_app(
        settings,
        options=options or ApiOptions(heartbeat_s=0.5),
        database=database,
        budget_check=budget_check,
    )
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
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Served(url=url, client=client, db=db, queue=JobQueue(db), app=app)
    finally:
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
        from storyloom.store.projects import ProjectStore, versions_from_result

        job = await self.served.queue.get(job_id)
        chapter_id = job.payload.get("chapter_id")
        if isinstance(chapter_id, str):
            versions, summary = versions_from_result(result)
            await ProjectStore(self.served.db).save_versions(chapter_id, job_id, versions, summary=summary)
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
