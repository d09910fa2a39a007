"""One extra API process of `storyloom serve --api-processes N` (`python -m storyloom.serve.api_child SPEC`).

The parent has migrated the database, bound the shared port and this process's UDP wake port, and
passes both sockets down as inherited descriptors; it also writes the worker census this process
reads for /api/health. Everything else an API process needs comes from the database, like the
parent's own API. It exits on SIGTERM (open SSE streams end, clients resume elsewhere with
Last-Event-ID) and when its parent is gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from contextlib import AsyncExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from storyloom.api.services import ApiOptions

__all__ = ["ChildSpec", "main"]

READY = "ready"  # the line a child prints once it accepts connections


class ChildSpec(BaseModel):
    """What the parent hands down on the command line (no secrets: those come in the environment)."""

    model_config = ConfigDict(frozen=True)

    index: int
    parent_pid: int
    listen_fd: int
    wake_fd: int
    census: Path
    graceful_s: float
    api: dict[str, Any]  # the parent's ApiOptions but its worker count (the census replaces it)

    @classmethod
    def build(
        cls, options: ApiOptions, *, index: int, listen_fd: int, wake_fd: int, census: Path, graceful_s: float
    ) -> ChildSpec:
        api = {f.name: getattr(options, f.name) for f in fields(options) if f.name != "worker_count"}
        return cls(
            index=index,
            parent_pid=os.getpid(),
            listen_fd=listen_fd,
            wake_fd=wake_fd,
            census=census,
            graceful_s=graceful_s,
            api=api,
        )


async def run_api_child(spec: ChildSpec) -> None:
    from storyloom.api.app import create_app
    from storyloom.commands._settings import load_settings
    from storyloom.gctune import tune_gc
    from storyloom.heap import limit_arenas
    from storyloom.jobs.events import EventHub
    from storyloom.jobs.queue import JobQueue
    from storyloom.jobs.wake import listen_for_wakes
    from storyloom.registry import installed_apps
    from storyloom.serve.census import CensusReader
    from storyloom.serve.server import api_server, start_server
    from storyloom.store.database import Database
    from storyloom.tracing import configure_tracing, shutdown_tracing

    limit_arenas()  # before the database starts its threads (storyloom.heap)
    settings = load_settings(data_dir=None, database_url=None)  # the parent set both in the env
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        if configure_tracing(endpoint=settings.otel_endpoint, service_name=settings.otel_service_name):
            stack.callback(shutdown_tracing)
        db = Database.from_url(settings.resolved_database_url())
        stack.push_async_callback(db.close)
        hub = EventHub.from_url(db, settings.event_hub_url)
        await hub.start()
        stack.push_async_callback(hub.stop)
        wakes = await listen_for_wakes(hub, sock=socket.socket(fileno=spec.wake_fd))
        stack.callback(wakes.close)
        options = ApiOptions(**spec.api, worker_count=CensusReader(spec.census))
        app = create_app(
            settings,
            registry=installed_apps(),
            options=options,
            database=db,
            queue=JobQueue(db, hub=hub, max_backlog=options.max_pending),
            hub=hub,
        )
        server = api_server(app, graceful_s=spec.graceful_s)
        sock = socket.socket(fileno=spec.listen_fd)
        serving = await start_server(server, sock)
        tune_gc()
        print(READY, flush=True)
        orphaned = asyncio.create_task(_parent_gone(spec.parent_pid))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped, orphaned}, return_when=asyncio.FIRST_COMPLETED)
        app.state.services.closing.set()
        server.should_exit = True
        await serving
        stopped.cancel()
        orphaned.cancel()


async def _parent_gone(parent_pid: int) -> None:
    """Return once the parent has died (we were re-parented): serving alone would hide the outage."""
    while True:
        if os.getppid() != parent_pid:
            return
        await asyncio.sleep(1.0)


def main(argv: list[str] | None = None) -> None:
    from storyloom import eventloop
    from storyloom.commands._settings import load_settings
    from storyloom.logs import configure_logging

    args = sys.argv[1:] if argv is None else argv
    spec = ChildSpec.model_validate_json(args[0])
    settings = load_settings(data_dir=None, database_url=None)
    configure_logging(level=settings.log_level, json=settings.log_json, static={"api_process": spec.index})
    eventloop.run(run_api_child(spec))


if __name__ == "__main__":
    main()
