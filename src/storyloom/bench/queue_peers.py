"""The queues users would pick instead, run by `storyloom bench queue` beside storyloom's own.

They live in the benchmark's own environment (a venv whose python is given), never in storyloom's:
`python -m venv /tmp/benchq && /tmp/benchq/bin/pip install saq arq`. Each peer is a module of
tasks written into a temp directory, worker processes started with that python, and a driver
script that enqueues the no-op jobs and waits for the queue to empty; the caller counts the CPU of
all of them and of redis-server. A peer whose package is missing is skipped with a note.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PEERS", "Peer", "peer_available"]


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    package: str
    tasks: str  # the module the workers import (REDIS_URL and CONCURRENCY formatted in)
    worker_argv: tuple[str, ...]  # after the python: how one worker process starts
    driver: str  # enqueue JOBS no-op jobs (SUBMITTERS at once), wait for none left, print JSON

    def write(self, directory: Path, *, redis_url: str, concurrency: int) -> None:
        tasks = self.tasks.replace("REDIS_URL", repr(redis_url)).replace("CONCURRENCY", str(concurrency))
        (directory / "bench_tasks.py").write_text(textwrap.dedent(tasks))
        (directory / "bench_driver.py").write_text(textwrap.dedent(self.driver))


# The driver's figures: `elapsed_s` from its first enqueue to the poll that saw the queue empty
# (polled every 5 ms), and its own CPU over that span.
_SAQ_TASKS = """
    from saq import Queue

    async def noop(ctx):
        return None

    settings = {
        "queue": Queue.from_url(REDIS_URL),
        "functions": [noop],
        "concurrency": CONCURRENCY,
    }
"""
_SAQ_DRIVER = """
    import asyncio, json, sys, time
    from saq import Queue

    async def main(url, jobs, submitters):
        queue = Queue.from_url(url)
        await queue.connect()
        per = -(-jobs // submitters)
        cpu0, t0 = time.process_time(), time.time()

        async def submit(n):
            for _ in range(n):
                await queue.enqueue("noop", timeout=60, retries=1)

        await asyncio.gather(*(submit(min(per, jobs - i * per)) for i in range(submitters)))
        submitted = time.time()
        while await queue.count("incomplete"):
            await asyncio.sleep(0.005)
        done = time.time()
        print(json.dumps({"elapsed_s": done - t0, "submit_s": submitted - t0,
                          "driver_cpu_s": time.process_time() - cpu0}))
        await queue.disconnect()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""
_ARQ_TASKS = """
    from arq.connections import RedisSettings

    async def noop(ctx):
        return None

    class WorkerSettings:
        functions = [noop]
        redis_settings = RedisSettings.from_dsn(REDIS_URL)
        max_jobs = CONCURRENCY
        keep_result = 0
        poll_delay = 0.05
"""
_ARQ_DRIVER = """
    import asyncio, json, sys, time
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.constants import default_queue_name

    async def main(url, jobs, submitters):
        pool = await create_pool(RedisSettings.from_dsn(url))
        per = -(-jobs // submitters)
        cpu0, t0 = time.process_time(), time.time()

        async def submit(n):
            for _ in range(n):
                await pool.enqueue_job("noop")

        await asyncio.gather(*(submit(min(per, jobs - i * per)) for i in range(submitters)))
        submitted = time.time()
        while await pool.zcard(default_queue_name):  # a job leaves the queue when it has finished
            await asyncio.sleep(0.005)
        done = time.time()
        print(json.dumps({"elapsed_s": done - t0, "submit_s": submitted - t0,
                          "driver_cpu_s": time.process_time() - cpu0}))
        await pool.aclose()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""

PEERS: dict[str, Peer] = {
    "saq": Peer("saq", "saq", _SAQ_TASKS, ("-m", "saq", "bench_tasks.settings"), _SAQ_DRIVER),
    "arq": Peer("arq", "arq", _ARQ_TASKS, ("-m", "arq", "bench_tasks.WorkerSettings"), _ARQ_DRIVER),
}


def peer_available(python: str, package: str) -> str | None:
    """None if `python` can import `package`, else why not (the note the report carries)."""
    try:
        probe = subprocess.run(
            [python, "-c", f"import {package}, json; print(json.dumps({package}.__name__))"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {python}: {exc}"
    if probe.returncode != 0 or json.loads(probe.stdout or "null") != package:
        return f"{package} is not installed for {python} (pip install {package} in the benchmark's venv)"
    return None
