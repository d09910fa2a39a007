"""One job of any app, run in this process on the same durable engine `serve` uses.

`storyloom run` and the tests use it: the data dir's database (so the job shows up in
`storyloom jobs` and the API afterwards), a worker in this process with every app's handlers, the
simulator in this process for the sim profile, and the job's event stream fed to a callback (the
live display) until its terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from storyloom.config import Settings
from storyloom.jobs.events import EventHub
from storyloom.jobs.models import TERMINAL_EVENT_KINDS, Job, StoredEvent
from storyloom.jobs.queue import JobQueue
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.registry import AppRegistry
from storyloom.store.database import Database

__all__ = ["run_local_job"]


async def run_local_job(
    settings: Settings,
    registry: AppRegistry,
    kind: str,
    payload: dict[str, Any],
    *,
    on_event: Callable[[StoredEvent], None] | None = None,
    priority: int = 5,
    sim_config: Any = None,
) -> Job:
    """Submit the job, run it here, return it once finished (completed, failed or cancelled)."""
    from storyloom.runner import app_handlers, build_services, warm_up

    async with AsyncExitStack() as stack:
        db = Database.from_url(settings.resolved_database_url())
        stack.push_async_callback(db.close)
        await db.migrate(registry.migrations())
        sim_url = None
        if settings.provider().is_simulated:
            from storyloom.sim import SimConfig, serve_sim

            sim = await stack.enter_async_context(serve_sim(sim_config or SimConfig(seed=settings.sim_seed)))
            sim_url = sim.url
        services = build_services(db, settings, registry, sim_url=sim_url)
        stack.push_async_callback(services.aclose)
        hub = EventHub(db)
        await hub.start()
        stack.push_async_callback(hub.stop)
        queue = JobQueue(db, hub=hub)
        warm_up(registry)
        worker = Worker(
            db,
            app_handlers(registry),
            config=WorkerConfig(concurrency=50, heartbeat_s=0.5, poll_s=0.05, schedule_every_s=None),
            services=services,
            queue=JobQueue(db),
            on_commit=hub.wake,
        )
        running = asyncio.create_task(worker.run(), name="local-worker")
        try:
            job = await queue.submit(kind, payload, priority=priority, tenant="default")
            async with hub.subscribe(job.id, 0) as sub:
                async for event in sub:
                    if on_event is not None:
                        on_event(event)
                    if event.kind in TERMINAL_EVENT_KINDS:
                        break
            return await queue.get(job.id)
        finally:
            worker.stop()
            with contextlib.suppress(Exception):
                await running
