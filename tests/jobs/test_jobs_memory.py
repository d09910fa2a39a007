"""A long-lived worker keeps nothing per finished job: ledger totals, pacing, run maps, caches."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from storyloom.bench.apps import echo
from storyloom.config import Settings
from storyloom.jobs import JobQueue, JobStatus
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.llm.cache import ResponseCache
from storyloom.llm.gateway import Gateway
from storyloom.llm.types import ChatResult, Usage
from storyloom.registry import AppRegistry
from storyloom.runner import app_handlers, build_services
from storyloom.store import Database


def _per_job_keys(gateway: Gateway) -> int:
    return sum(1 for dim, _ in gateway.ledger.totals if dim in ("job", "step"))


async def _run_batch(queue: JobQueue, n: int, start: int) -> None:
    inputs = [{"question": f"question {start + i}?"} for i in range(n)]
    await _run_jobs(queue, "bench-echo", inputs)


async def _run_jobs(queue: JobQueue, kind: str, inputs: list[dict[str, Any]]) -> None:
    """Submit one job of `kind` per input and wait (bounded) until all of them completed."""
    ids = [(await queue.submit(kind, {"input": one})).id for one in inputs]
    deadline = time.monotonic() + 60
    while True:
        jobs = [await queue.get(i) for i in ids]
        if all(j.status.is_terminal for j in jobs):
            break
        assert time.monotonic() < deadline, "the batch did not finish"
        await asyncio.sleep(0.05)
    assert all(j.status is JobStatus.COMPLETED for j in jobs), [j.error for j in jobs]


@pytest.mark.slow  # 90 jobs against the simulator
async def test_many_jobs_in_one_worker_leave_no_per_job_state(tmp_path: Path, sim: Any) -> None:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'mem.db'}")
    await db.migrate()
    settings = Settings(profile="sim", limits_url="memory://", data_dir=tmp_path)
    registry = AppRegistry([echo])
    services = build_services(db, settings, registry, sim_url=sim.url)
    gateway = services.client
    assert isinstance(gateway, Gateway)
    queue = JobQueue(db)
    config = WorkerConfig(concurrency=40, heartbeat_s=0.1, poll_s=0.02, schedule_every_s=None)
    worker = Worker(db, app_handlers(registry), config=config, services=services, queue=queue)
    task = asyncio.create_task(worker.run())
    try:
        await _run_batch(queue, 30, 0)
        await _drained(gateway)
        after_first = (_per_job_keys(gateway), gateway.ledger.jobs_tracked, len(gateway.ledger.calls))
        await _run_batch(queue, 60, 30)
        await _drained(gateway)
        after_second = (_per_job_keys(gateway), gateway.ledger.jobs_tracked, len(gateway.ledger.calls))
    finally:
        worker.stop()
        await task
        await services.aclose()
        await db.close()
    assert gateway.ledger.total("tenant", "default").calls == 90 * 2  # the calls were metered
    assert after_first[:2] == (0, 0) and after_second[:2] == (0, 0)  # nothing kept per finished job
    assert after_second[2] <= gateway.ledger.calls.maxlen == 1_000  # the debug trail is bounded
    assert services.pacing.streaming == 0
    assert worker.running == 0 and not worker.checkpoints.known_empty


def test_ledger_keeps_at_most_max_jobs_when_nobody_forgets() -> None:
    from storyloom.llm.ledger import CallRecord, Ledger, PriceTable

    ledger = Ledger(PriceTable({}), {}, max_jobs=10)
    for i in range(50):
        ledger.record(CallRecord("t", f"job{i}", "plot", "m", "d", Usage(1, 1), 0.0, False))
    assert ledger.jobs_tracked == 10
    assert sum(1 for dim, _ in ledger.totals if dim == "step") == 10
    assert ledger.total("job", "job49").calls == 1 and ledger.total("job", "job0").calls == 0
    assert ledger.total("tenant", "t").calls == 50


def test_response_cache_is_bounded_by_bytes_and_sweeps_expired_entries() -> None:
    def answer(n: int) -> ChatResult:
        return ChatResult(text="x" * n, usage=Usage(1, 1), model="m")

    cache = ResponseCache(ttl_s=3600, max_entries=1_000, max_bytes=50_000)
    for i in range(100):
        cache.put(f"k{i}", answer(4_600))
    assert cache.bytes <= 50_000 and len(cache) == 10
    assert cache.get("k99") is not None and cache.get("k0") is None
    short = ResponseCache(ttl_s=0.01, max_entries=1_000)
    for i in range(20):
        short.put(f"k{i}", answer(10))
    time.sleep(0.02)
    short.put("fresh", answer(10))
    assert len(short) == 1  # the expired ones went when the new one came


async def _drained(gateway: Any) -> None:
    """A job's row is completed before its run returns to the worker, which then forgets it: give
    the last runs of a batch that moment (bounded), so the check is of what stays, not a race."""
    for _ in range(100):
        if gateway.ledger.jobs_tracked == 0:
            return
        await asyncio.sleep(0.02)


def _own_garbage() -> list[str]:
    """Type names of storyloom's and SQLAlchemy's objects that only the cycle collector could free."""
    import gc

    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    owners = ("storyloom", "sqlalchemy")
    return sorted({type(o).__qualname__ for o in garbage if type(o).__module__.startswith(owners)})


@pytest.mark.slow  # chapter jobs against the simulator
async def test_finished_chapter_jobs_leave_no_reference_cycles(tmp_path: Path, sim: Any) -> None:
    """A job's objects are freed by reference counting when it ends, not by the collector: full
    collections are rare on purpose (storyloom.gctune), and every cycle of a finished job kept its
    whole graph (contexts, runs, texts) in a busy worker for minutes; the soak's RSS grew with it."""
    import gc

    from storyloom.registry import installed_apps

    registry = installed_apps()
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'cycles.db'}")
    await db.migrate(registry.migrations())
    settings = Settings(profile="sim", limits_url="memory://", data_dir=tmp_path)
    services = build_services(db, settings, registry, sim_url=sim.url)
    queue = JobQueue(db)
    config = WorkerConfig(concurrency=10, heartbeat_s=0.1, poll_s=0.02, schedule_every_s=None)
    worker = Worker(db, app_handlers(registry), config=config, services=services, queue=queue)
    task = asyncio.create_task(worker.run())

    async def chapters(n: int) -> None:
        chapter = {"overall_outline": "A courier on the river.", "target_length": 300, "language": "en"}
        inputs = [{**chapter, "chapter_outline": f"Stranger {i}.", "versions": 2} for i in range(n)]
        await _run_jobs(queue, "novel", inputs)

    try:
        await chapters(2)  # caches and first-use state are not what this test is about
        gc.collect()
        gc.disable()
        try:
            await chapters(3)
            await _drained(services.client)
            left = _own_garbage()
        finally:
            gc.enable()
    finally:
        worker.stop()
        await task
        await services.aclose()
        await db.close()
    assert left == []
