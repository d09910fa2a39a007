"""The queue benchmark: no-op jobs per second through submit -> claim -> complete, and their CPU.

storyloom's queue on SQLite and on PostgreSQL (a throw-away cluster, fsync on) with 1, 2 and 4
worker processes, side by side in the same run with the queues users would pick instead (SAQ and
arq on Redis, from the benchmark's own venv: `bench.queue_peers`). Every system gets the same
work: the worker processes are started and idle, then one driver process submits `jobs` no-op jobs
from `submitters` concurrent callers, and the clock stops when the queue has none left.

Figures per row: jobs/s (jobs over the time from the first submission to the last completion),
CPU-s per 1,000 jobs (driver + workers + the database server, over the same span), and jobs per
CPU-second, which is the per-core comparison: on a machine with spare cores jobs/s grows with
worker processes, jobs per CPU-second is what each core buys. Durability: a storyloom job is
acknowledged (completed) only in the transaction that commits it; SAQ and arq are measured on Redis
without persistence and (SAQ) with an append-only file fsynced every second, which can lose the
last second of acknowledgements on a crash.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from storyloom import eventloop
from storyloom.bench.queue_peers import PEERS, peer_available
from storyloom.bench.queue_worker import NOOP_KIND
from storyloom.bench.servers import LocalServer, postgres_server, redis_server
from storyloom.jobs.models import JobStatus
from storyloom.jobs.queue import JobQueue
from storyloom.store.database import Database
from storyloom.store.schema import jobs as jobs_table

__all__ = ["QueueBenchConfig", "run_queue_bench"]

_POLL_S = 0.005  # how often the driver looks for an empty queue (every system alike)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueBenchConfig:
    jobs: int = 5000
    workers: tuple[int, ...] = (1, 2, 4)
    backends: tuple[str, ...] = ("sqlite", "postgres")
    peers: tuple[str, ...] = ("saq", "arq")
    peer_python: str = "/tmp/benchq/bin/python"
    repeats: int = 3  # each row is the median run of this many
    concurrency: int = 100  # jobs at once per worker process (SAQ concurrency, arq max_jobs)
    submitters: int = 50  # concurrent submitting callers in the driver
    log_level: str = "INFO"  # storyloom workers' STORYLOOM_LOG_LEVEL (INFO: as deployed)
    timeout_s: float = 300.0


def _cpu_s(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _server_cpu_s(server: LocalServer | None) -> float:
    return _cpu_s(server.processes()) if server is not None else 0.0


def _row(system: str, backend: str, workers: int, runs: list[dict[str, float]], jobs: int) -> dict[str, Any]:
    """The median run (by jobs/s) of `runs`, with every run's jobs/s beside it."""
    rates = [r["jobs"] / r["elapsed_s"] for r in runs]
    median = sorted(zip(rates, runs, strict=True), key=lambda p: p[0])[len(runs) // 2][1]
    cpu = median["cpu_s"]
    return {
        "system": system,
        "backend": backend,
        "workers": workers,
        "jobs": jobs,
        "jobs_per_s": round(jobs / median["elapsed_s"], 1),
        "jobs_per_s_runs": [round(r, 1) for r in rates],
        "median_of": len(runs),
        "submit_s": round(median["submit_s"], 3),
        "elapsed_s": round(median["elapsed_s"], 3),
        "cpu_s_per_1000_jobs": round(cpu * 1000 / jobs, 3),
        "jobs_per_cpu_s": round(jobs / cpu, 1) if cpu > 0 else None,
        "cpu_s": {k.removeprefix("cpu_"): round(v, 3) for k, v in median.items() if k.startswith("cpu_")},
    }


# ---- storyloom --------------------------------------------------------------------------------


async def _fresh_postgres_db(admin_url: str, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def _storyloom_workers(url: str, n: int, cfg: QueueBenchConfig) -> Iterator[list[psutil.Process]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
    env["STORYLOOM_LOG_LEVEL"] = cfg.log_level
    cmd = [sys.executable, "-m", "storyloom.bench.queue_worker", url, str(cfg.concurrency)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        for _ in range(n)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a storyloom bench worker did not start")
        yield [psutil.Process(p.pid) for p in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


async def _submit_and_wait(url: str, cfg: QueueBenchConfig) -> dict[str, float]:
    """The driver's part, in this process: submit, then poll until every job has completed."""
    async with Database.from_url(url) as db:
        queue = JobQueue(db)
        count = sa.select(sa.func.count()).where(jobs_table.c.status == JobStatus.COMPLETED.value)
        per = -(-cfg.jobs // cfg.submitters)

        async def submit(n: int) -> None:
            for _ in range(n):
                await queue.submit(NOOP_KIND, {})

        cpu0, t0 = time.process_time(), time.time()
        await asyncio.gather(*(submit(min(per, cfg.jobs - i * per)) for i in range(cfg.submitters)))
        submitted = time.time()
        deadline = time.monotonic() + cfg.timeout_s
        while time.monotonic() < deadline:
            async with db.read() as conn:
                if int(await conn.scalar(count) or 0) >= cfg.jobs:
                    break
            await asyncio.sleep(_POLL_S)
        else:
            raise RuntimeError(f"storyloom did not complete {cfg.jobs} jobs in {cfg.timeout_s} s")
        done = time.time()
        return {
            "elapsed_s": done - t0,
            "submit_s": submitted - t0,
            "driver_cpu_s": time.process_time() - cpu0,
        }


def _storyloom_once(
    url: str, workers: int, cfg: QueueBenchConfig, server: LocalServer | None
) -> dict[str, float]:
    async def migrate() -> None:
        async with Database.from_url(url) as db:
            await db.migrate()

    eventloop.run(migrate())
    with _storyloom_workers(url, workers, cfg) as procs:
        cpu_w, cpu_s = _cpu_s(procs), _server_cpu_s(server)
        out = eventloop.run(_submit_and_wait(url, cfg))
        out["cpu_workers"] = _cpu_s(procs) - cpu_w
        out["cpu_server"] = _server_cpu_s(server) - cpu_s
    out["cpu_driver"] = out.pop("driver_cpu_s")
    out["cpu_s"] = out["cpu_workers"] + out["cpu_server"] + out["cpu_driver"]
    out["jobs"] = cfg.jobs
    return out


def _storyloom_rows(cfg: QueueBenchConfig, stack: ExitStack) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for backend in cfg.backends:
        server: LocalServer | None = None
        if backend == "postgres":
            server = stack.enter_context(postgres_server())
            if server is None:
                notes.append("storyloom on postgres skipped: no PostgreSQL under /usr/lib/postgresql")
                continue
        for workers in cfg.workers:
            runs = []
            for attempt in range(cfg.repeats):
                name = f"bench_queue_{workers}_{attempt}"
                if server is not None:
                    url = eventloop.run(_fresh_postgres_db(server.url, name))
                else:
                    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="storyloom-bench-queue-"))
                    url = f"sqlite+aiosqlite:///{Path(tmp) / 'queue.db'}"
                runs.append(_storyloom_once(url, workers, cfg, server))
            rows.append(_row("storyloom", backend, workers, runs, cfg.jobs))
    return rows, notes


# ---- peers ------------------------------------------------------------------------------------


def _peer_once(
    name: str, redis: LocalServer, workers: int, cfg: QueueBenchConfig, workdir: Path
) -> dict[str, float]:
    import json

    peer = PEERS[name]
    subprocess.run(
        [cfg.peer_python, "-c", f"import redis; redis.Redis.from_url({redis.url!r}).flushall()"],
        check=True,
        cwd=workdir,
    )
    peer.write(workdir, redis_url=redis.url, concurrency=cfg.concurrency)
    procs = [
        subprocess.Popen(
            [cfg.peer_python, *peer.worker_argv],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        time.sleep(2.0)  # imports and connection: not what a row measures
        watched = [psutil.Process(p.pid) for p in procs]
        cpu_w, cpu_s = _cpu_s(watched), _server_cpu_s(redis)
        driver = subprocess.run(
            [cfg.peer_python, "bench_driver.py", redis.url, str(cfg.jobs), str(cfg.submitters)],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=cfg.timeout_s,
            check=True,
        )
        out: dict[str, float] = json.loads(driver.stdout.strip().splitlines()[-1])
        out["cpu_workers"] = _cpu_s(watched) - cpu_w
        out["cpu_server"] = _server_cpu_s(redis) - cpu_s
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    out["cpu_driver"] = out.pop("driver_cpu_s")
    out["cpu_s"] = out["cpu_workers"] + out["cpu_server"] + out["cpu_driver"]
    out["jobs"] = cfg.jobs
    return out


def _peer_rows(cfg: QueueBenchConfig, stack: ExitStack) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    wanted = [p for p in cfg.peers if p in PEERS]
    notes += [f"{p}: not a known peer (known: {', '.join(PEERS)})" for p in cfg.peers if p not in PEERS]
    ready = []
    for name in wanted:
        why = peer_available(cfg.peer_python, PEERS[name].package)
        if why is None:
            ready.append(name)
        else:
            notes.append(f"{name} skipped: {why}")
    if not ready:
        return rows, notes
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="storyloom-bench-peers-")))
    # SAQ also with an append-only file fsynced every second: its nearest to a durable queue.
    variants = [(False, ready), (True, [p for p in ready if p == "saq"])]
    for aof, names in variants:
        if not names:
            continue
        with redis_server(aof_everysec=aof) as redis:
            if redis is None:
                notes.append("peers skipped: redis-server is not installed")
                return rows, notes
            backend = "redis-aof-everysec" if aof else "redis"
            for name in names:
                for workers in cfg.workers:
                    runs = [_peer_once(name, redis, workers, cfg, workdir) for _ in range(cfg.repeats)]
                    rows.append(_row(name, backend, workers, runs, cfg.jobs))
    return rows, notes


def _best_peer_per_core(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """storyloom's best jobs per CPU-second against the best peer's, per backend."""
    peers = [r for r in rows if r["system"] != "storyloom" and r["jobs_per_cpu_s"]]
    best_peer = max(peers, key=lambda r: r["jobs_per_cpu_s"], default=None)
    out: dict[str, Any] = {"best_peer": None if best_peer is None else _label(best_peer)}
    for backend in sorted({r["backend"] for r in rows if r["system"] == "storyloom"}):
        mine = [
            r for r in rows if r["system"] == "storyloom" and r["backend"] == backend and r["jobs_per_cpu_s"]
        ]
        best = max(mine, key=lambda r: r["jobs_per_cpu_s"], default=None)
        if best is None or best_peer is None:
            continue
        out[f"storyloom_{backend}_best"] = _label(best)
        out[f"storyloom_{backend}_per_core_vs_best_peer"] = round(
            best["jobs_per_cpu_s"] / best_peer["jobs_per_cpu_s"], 3
        )
    return out


def _label(row: dict[str, Any]) -> str:
    return (
        f"{row['system']} on {row['backend']}, {row['workers']} worker(s): {row['jobs_per_cpu_s']} jobs/CPU-s"
    )


def run_queue_bench(cfg: QueueBenchConfig) -> dict[str, Any]:
    """Every row of the table, the notes on what was skipped, and the per-core comparison."""
    started = time.time()
    with ExitStack() as stack:
        rows, notes = _storyloom_rows(cfg, stack)
        peer_rows, peer_notes = _peer_rows(cfg, stack)
    rows += peer_rows
    notes += peer_notes
    return {
        "jobs": cfg.jobs,
        "concurrency": cfg.concurrency,
        "submitters": cfg.submitters,
        "repeats": cfg.repeats,
        "storyloom_log_level": cfg.log_level,
        "cores": psutil.cpu_count(),
        "rows": rows,
        "comparison": _best_peer_per_core(rows),
        "notes": notes,
        "wall_s": round(time.time() - started, 1),
    }
