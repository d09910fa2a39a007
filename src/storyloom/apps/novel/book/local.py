"""The engine in the terminal: the service's database (same `--data-dir` as `storyloom serve`),
its queue, and, for commands that write, a worker in this process (with the simulator for the
`sim` profile). A book begun here is the studio's book: only the process differs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from storyloom.apps.novel.book.control import BookControl
from storyloom.config import Settings
from storyloom.jobs.queue import JobQueue
from storyloom.store.database import Database

__all__ = ["Local", "local_engine"]


@dataclass(slots=True)
class Local:
    db: Database
    queue: JobQueue
    control: BookControl
    worker: Any = None


@contextlib.asynccontextmanager
async def local_engine(
    settings: Settings, *, worker: bool = False, concurrency: int = 8
) -> AsyncIterator[Local]:
    from storyloom.jobs.worker import Worker, WorkerConfig
    from storyloom.registry import installed_apps
    from storyloom.runner import app_handlers, build_services

    registry = installed_apps()
    db = Database.from_url(settings.resolved_database_url())
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(db.close)
        await db.migrate(registry.migrations())
        queue = JobQueue(db)
        local = Local(db, queue, BookControl(db, queue))
        if worker:
            sim_url = None
            if settings.provider().is_simulated:
                from storyloom.apps.novel.cli import sim_config_for_write
                from storyloom.sim import serve_sim

                sim = await stack.enter_async_context(serve_sim(sim_config_for_write(settings.sim_seed)))
                sim_url = sim.url
            services = build_services(db, settings, registry, sim_url=sim_url)
            stack.push_async_callback(services.aclose)
            local.worker = Worker(
                db,
                app_handlers(registry),
                config=WorkerConfig(concurrency=concurrency, poll_s=0.05, schedule_every_s=None, grace_s=2.0),
                services=services,
                queue=queue,
            )
            task = asyncio.create_task(local.worker.run())

            async def stop() -> None:
                local.worker.stop()
                await task

            stack.push_async_callback(stop)
        yield local
