"""`run_service`: the whole embedded service in one command — simulator, workers, API.

One parent process hosts the API (uvicorn, in its own event loop) and the supervisor of the worker
processes, so /api/health can report the supervisor's live worker count. With `api_processes` > 1
it also keeps that many minus one API child processes on the same port (SO_REUSEPORT, see
`api/server.py`), each with its own event hub and wake port; they read the worker count from a
census file. With the sim profile the simulator runs as its own process (`storyloom sim`) and every
worker calls it over loopback HTTP, so all of them share one simulated provider and its quotas.
SIGTERM or Ctrl-C stops, in order: the API processes (open SSE streams get `graceful_s` to end),
the workers (each drains or hands its running jobs back; steps already checkpointed are not
redone), the simulator. With `api.auth` every API process requires an API key (api/auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from storyloom.api.services import ApiOptions
from storyloom.config import Settings
from storyloom.logs import get_logger
from storyloom.registry import AppRegistry
from storyloom.serve.simulator import SimProcess

if TYPE_CHECKING:
    from storyloom.serve.api_processes import ApiProcesses
    from storyloom.serve.supervisor import Supervisor
    from storyloom.store.database import Database

__all__ = ["ServeConfig", "run_service"]

_log = get_logger("storyloom.serve")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeConfig:
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8000
    min_workers: int = 1
    max_workers: int = 4
    concurrency: int = 100  # jobs at once per worker process
    lease_s: float = 15.0
    grace_s: float = 10.0  # on stop: time for running jobs to finish before they are handed back
    graceful_s: float = 3.0  # on stop: time for open HTTP/SSE connections to end
    sim_config: Path | None = None  # SimConfig file for the simulator process (sim profile)
    api_processes: int = 1  # API processes sharing the port (SO_REUSEPORT); extras are children
    worker_nice: int = 5  # added to the workers' niceness: the API first when CPU is short
    api: ApiOptions = field(default_factory=ApiOptions)


async def run_service(
    config: ServeConfig, registry: AppRegistry, *, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve `registry`'s apps until SIGTERM/SIGINT. `on_ready(url)` is called once the API
    accepts connections. (The worker processes load the same installed apps themselves.)"""
    from storyloom.api.app import create_app
    from storyloom.gctune import tune_gc
    from storyloom.jobs.events import EventHub
    from storyloom.jobs.queue import JobQueue
    from storyloom.jobs.wake import listen_for_wakes, wake_socket, wake_url
    from storyloom.serve.server import api_server, listen_sockets, start_server
    from storyloom.serve.supervisor import Supervisor, SupervisorConfig
    from storyloom.serve.worker_process import simulator_env
    from storyloom.store.database import Database
    from storyloom.tracing import configure_tracing, shutdown_tracing

    settings = config.settings
    database_url = settings.resolved_database_url()
    provider = settings.provider()  # a ConfigError here, before anything starts
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with AsyncExitStack() as stack:
        if configure_tracing(endpoint=settings.otel_endpoint, service_name=settings.otel_service_name):
            stack.callback(shutdown_tracing)
        listen = listen_sockets(config.host, config.port, config.api_processes)  # fail fast on a taken port
        for sock in listen:
            stack.callback(sock.close)
        env: dict[str, str] = {}
        api_only = config.max_workers == 0  # an API node: the workers run elsewhere (deploy/)
        if provider.is_simulated and not api_only:
            sim = await asyncio.to_thread(SimProcess, config.sim_config, seed=settings.sim_seed)
            stack.push_async_callback(asyncio.to_thread, sim.close)
            sim_url = sim.url
            _log.info("simulator_started", url=sim_url, pid=sim.pid)
            env = simulator_env(sim_url, settings)
        db = Database.from_url(database_url)
        stack.push_async_callback(db.close)
        await db.migrate(registry.migrations())
        if config.api.auth:
            await _warn_without_keys(db)
        hub = EventHub.from_url(db, settings.event_hub_url)
        await hub.start()
        stack.push_async_callback(hub.stop)
        wakes = await listen_for_wakes(hub)
        stack.callback(wakes.close)
        child_wakes = [wake_socket() for _ in listen[1:]]
        for sock in child_wakes:
            stack.callback(sock.close)
        addresses = [wakes.get_extra_info("sockname"), *(s.getsockname() for s in child_wakes)]
        env["STORYLOOM_EVENT_WAKE_URL"] = ",".join(wake_url(a) for a in addresses)
        worker_count = None  # an API node counts the workers holding leases (api/workers.py)
        children = None
        if not api_only:
            supervisor = Supervisor(
                SupervisorConfig(
                    database_url=database_url,
                    min_workers=config.min_workers,
                    max_workers=config.max_workers,
                    concurrency=config.concurrency,
                    worker_args=["--lease-s", str(config.lease_s), "--grace-s", str(config.grace_s)],
                    env=env,
                    stop_grace_s=config.grace_s + 10,
                    nice=config.worker_nice,
                ),
                queue=JobQueue(db),
            )
            await supervisor.start()
            stack.push_async_callback(supervisor.stop)
            worker_count = supervisor.live_workers
            children = await _start_children(
                stack, config, listen[1:], child_wakes, supervisor, database_url
            )

        app = create_app(
            settings,
            registry=registry,
            options=replace(config.api, worker_count=worker_count),
            database=db,
            queue=JobQueue(db, hub=hub, max_backlog=config.api.max_pending),
            hub=hub,
        )
        server = api_server(app, graceful_s=config.graceful_s)
        serving = await start_server(server, listen[0])
        tune_gc()
        host, port = listen[0].getsockname()[:2]
        url = f"http://{host}:{port}"
        _log.info(
            "service_ready",
            url=url,
            workers=f"{config.min_workers}..{config.max_workers}",
            api_processes=config.api_processes,
            auth=config.api.auth,
        )
        if on_ready is not None:
            on_ready(url)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        _log.info("service_stopping")
        if children is not None:
            children.terminate()  # they close their streams while this process closes its own
        app.state.services.closing.set()
        server.should_exit = True
        await serving
        stopped.cancel()
    _log.info("service_stopped")


async def _warn_without_keys(db: Database) -> None:
    from storyloom.store.keys import KeyStore

    if not await KeyStore(db).list_keys(include_revoked=False):
        _log.warning(
            "auth_without_keys",
            message="authentication is on and no API key exists: every request but health gets 401; "
            "create one with `storyloom keys create --tenant T`.",
        )


async def _start_children(
    stack: AsyncExitStack,
    config: ServeConfig,
    listen: list[socket.socket],
    wakes: list[socket.socket],
    supervisor: Supervisor,
    database_url: str,
) -> ApiProcesses | None:
    """The extra API processes, with the census file that gives them the supervisor's worker count."""
    if not listen:
        return None
    from storyloom.serve.api_processes import ApiProcesses
    from storyloom.serve.census import write_census_forever

    census = config.settings.data_dir.resolve() / "run" / f"serve-{os.getpid()}-workers.json"
    writer = asyncio.create_task(write_census_forever(census, lambda: supervisor.worker_count))
    stack.push_async_callback(_cancel, writer)
    children = ApiProcesses(
        listen=listen,
        wake=wakes,
        census=census,
        options=config.api,
        graceful_s=config.graceful_s,
        env={"STORYLOOM_DATABASE_URL": database_url, "STORYLOOM_DATA_DIR": str(config.settings.data_dir)},
    )
    stack.push_async_callback(children.stop)
    await children.start()
    return children


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
