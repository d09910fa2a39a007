"""Fixtures for the API tests: the real app on a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from storyloom.api.app import create_app
from storyloom.api.services import ApiOptions
from storyloom.config import Settings
from storyloom.jobs.queue import JobQueue
from storyloom.store.database import Database


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


@asynccontextmanager
async def serve_app(data_dir: Path, options: ApiOptions | None = None) -> AsyncIterator[Served]:
    """create_app on uvicorn (127.0.0.1, free port) in this event loop, plus a client and a queue."""
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings, options=options or ApiOptions(heartbeat_s=0.5))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    db = Database.from_url(settings.resolved_database_url())
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Served(url=url, client=client, db=db, queue=JobQueue(db))
    finally:
        server.should_exit = True
        await task
        await db.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_app(tmp_path) as served:
        yield served


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
