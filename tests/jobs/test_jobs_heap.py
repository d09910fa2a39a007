"""The worker's heap trims: after bursts, and under a steady load that never lets it go idle.

A 30-minute soak showed why the second matters: the worker that trimmed only when idle never was,
and glibc kept every freed page resident (storyloom.heap)."""

from __future__ import annotations

import asyncio
import ctypes
import time
from typing import Any

import pytest

from storyloom import heap
from storyloom.heap import HeapTrimmer, limit_arenas, trim_heap


def test_a_trim_waits_for_enough_work_and_enough_time(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    monkeypatch.setattr(heap, "trim_heap", lambda: trims.append(time.monotonic()))
    clock = [1000.0]
    trimmer = HeapTrimmer(every_s=30.0, after=50, clock=lambda: clock[0])

    trimmer.done(49)
    clock[0] += 60
    assert not trimmer.maybe_trim() and not trimmer.maybe_trim(idle=True)  # too little work
    trimmer.done()
    assert trimmer.maybe_trim() and len(trims) == 1
    trimmer.done(500)
    clock[0] += 10
    assert not trimmer.maybe_trim()  # busy, and the last trim was 10 s ago
    assert trimmer.maybe_trim(idle=True)  # going idle after a burst trims at once
    trimmer.done(50)
    clock[0] += 31
    assert trimmer.maybe_trim() and len(trims) == 3  # steady load: every 30 s


def test_the_glibc_calls_run_here() -> None:
    """On this machine's glibc the calls are made (elsewhere they are no-ops, never errors)."""
    libc: Any = heap._libc()
    assert libc is not None and isinstance(libc, ctypes.CDLL)
    limit_arenas(2)
    trim_heap()


async def test_a_worker_under_steady_load_trims(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Jobs always running (the worker is never idle), and still its heap is trimmed."""
    from storyloom.jobs.context import JobContext
    from storyloom.jobs.queue import JobQueue
    from storyloom.jobs.worker import Worker, WorkerConfig
    from storyloom.store.database import Database

    trimmed = asyncio.Event()
    running_at_trim: list[int] = []

    def trim() -> None:
        running_at_trim.append(worker.running)
        trimmed.set()

    monkeypatch.setattr(heap, "trim_heap", trim)

    async def short(_: JobContext) -> dict[str, Any]:
        await asyncio.sleep(0.02)
        return {}

    async def long(_: JobContext) -> dict[str, Any]:  # holds a slot: the worker is never idle
        async with asyncio.timeout(10):
            await trimmed.wait()
        return {}

    async with Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}") as db:
        await db.migrate()
        queue = JobQueue(db)
        handlers = {"short": short, "long": long}
        worker = Worker(db, handlers, config=WorkerConfig(concurrency=4, heartbeat_s=0.05))
        worker._trimmer = HeapTrimmer(every_s=0.2, after=5)
        await queue.submit("long", {}, priority=9)
        for _ in range(40):
            await queue.submit("short", {})
        running = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(10):
                await trimmed.wait()
            assert running_at_trim[0] > 0  # trimmed while busy
        finally:
            worker.stop()
            await running
