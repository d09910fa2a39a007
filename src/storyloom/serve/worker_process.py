"""The body of a worker process: settings in, a running `Worker` until SIGTERM, exit clean."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack

from storyloom.config import Settings
from storyloom.gctune import tune_gc
from storyloom.heap import limit_arenas
from storyloom.jobs.hub import hub_backend_from_url
from storyloom.jobs.wake import WakeSender, parse_wake_urls
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.logs import get_logger
from storyloom.registry import AppRegistry
from storyloom.serve.simulator import SimProcess
from storyloom.store.database import Database
from storyloom.tracing import configure_tracing, shutdown_tracing

__all__ = ["run_supervised", "run_worker_process", "simulator_env"]

_log = get_logger("storyloom.serve.worker_process")


async def run_worker_process(
    settings: Settings, config: WorkerConfig, registry: AppRegistry, *, sim_url: str | None = None
) -> None:
    """Migrate, build the shared services, run until SIGTERM/SIGINT, then drain and close."""
    from storyloom.runner import app_handlers, build_services, install_schedules, warm_up

    limit_arenas()  # before the database starts its threads (storyloom.heap)
    async with AsyncExitStack() as stack:
        if configure_tracing(endpoint=settings.otel_endpoint, service_name=settings.otel_service_name):
            stack.callback(shutdown_tracing)
        db = Database.from_url(settings.resolved_database_url())
        stack.push_async_callback(db.close)
        if settings.event_wake_url:
            wake = WakeSender(parse_wake_urls(settings.event_wake_url))
            stack.callback(wake.close)
            db.add_commit_listener(wake)
        if (backend := hub_backend_from_url(settings.event_hub_url)) is not None:
            db.add_commit_listener(backend.notify)  # the API nodes' hubs, on any machine
            stack.push_async_callback(backend.aclose)
        await db.migrate(registry.migrations())
        if sim_url is None and settings.provider().is_simulated:
            # No simulator given (the serve command passes one): run one for this process alone.
            sim = stack.enter_context(SimProcess(seed=settings.sim_seed))
            sim_url = sim.url
            _log.warning("worker_private_simulator", url=sim_url)
        services = build_services(db, settings, registry, sim_url=sim_url)
        stack.push_async_callback(services.aclose)
        if config.schedule_every_s is not None:
            await install_schedules(db, registry, services.maintenance)
        worker = Worker(db, app_handlers(registry), config=config, services=services)
        warm_up(registry)
        tune_gc()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()


def simulator_env(sim_url: str, settings: Settings) -> dict[str, str]:
    """How worker processes reach a simulator another process runs (see CONTRACTS.md)."""
    return {
        "STORYLOOM_PROFILE": "generic",
        "STORYLOOM_BASE_URL": sim_url,
        "STORYLOOM_MODEL": settings.provider().model,
    }


async def run_supervised(
    settings: Settings, config: WorkerConfig, registry: AppRegistry, *, processes: int
) -> None:
    """`storyloom worker --processes P`: P worker processes under a supervisor, until SIGTERM.

    With the sim profile the supervisor runs one simulator and every worker calls it.
    """
    from storyloom.jobs.queue import JobQueue
    from storyloom.serve.supervisor import Supervisor, SupervisorConfig

    url = settings.resolved_database_url()
    db = Database.from_url(url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(db.close)
        env: dict[str, str] = {}
        if settings.provider().is_simulated:
            sim = stack.enter_context(SimProcess(seed=settings.sim_seed))
            env = simulator_env(sim.url, settings)
        await db.migrate(registry.migrations())
        args = ["--lease-s", str(config.lease_s), "--grace-s", str(config.grace_s)]
        if config.max_rss_mb is not None:
            args += ["--max-rss-mb", str(config.max_rss_mb)]
        sup = Supervisor(
            SupervisorConfig(
                database_url=url,
                min_workers=processes,
                max_workers=processes,
                concurrency=config.concurrency,
                worker_args=args,
                env=env,
                stop_grace_s=config.grace_s + 10,
            ),
            queue=JobQueue(db),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await sup.start()
        await stop.wait()
        await sup.stop()
