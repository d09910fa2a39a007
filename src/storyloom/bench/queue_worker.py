"""One worker process of `storyloom bench queue`: the real `Worker` with one no-op handler.

`python -m storyloom.bench.queue_worker DATABASE_URL CONCURRENCY`: prints `ready` once its database
is open and its claim loop runs, then claims and completes `noop` jobs until SIGTERM. Logging is
configured as `storyloom worker` configures it (level from STORYLOOM_LOG_LEVEL, INFO by default),
so the figures include what a deployed worker pays per job for its log lines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from storyloom import eventloop
from storyloom.gctune import tune_gc
from storyloom.jobs.context import JobContext
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.logs import configure_logging
from storyloom.store.database import Database

__all__ = ["NOOP_KIND", "main"]

NOOP_KIND = "noop"


async def _noop(_: JobContext) -> dict[str, Any]:
    return {}


async def _run(url: str, concurrency: int) -> None:
    async with Database.from_url(url) as db:
        worker = Worker(
            db,
            {NOOP_KIND: _noop},
            config=WorkerConfig(concurrency=concurrency, schedule_every_s=None),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        tune_gc()
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.2)
        print("ready", flush=True)
        await running


def main() -> None:
    url, concurrency = sys.argv[1], int(sys.argv[2])
    configure_logging(level=os.environ.get("STORYLOOM_LOG_LEVEL", "INFO"), json=True)
    eventloop.run(_run(url, concurrency))


if __name__ == "__main__":
    main()
