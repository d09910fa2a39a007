"""Worker behaviour in-process with small handlers of our own (both databases)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from storyloom.errors import InputError
from storyloom.flow import Flow, StepContext, run_flow
from storyloom.jobs import JobQueue, JobStatus
from storyloom.jobs.context import JobContext
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.store import Database

FAST = {"heartbeat_s": 0.1, "poll_s": 0.02, "schedule_every_s": None}


async def _wait_terminal(queue: JobQueue, job_ids: list[str], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [await queue.get(j) for j in job_ids]
        if all(j.status.is_terminal for j in jobs):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs not terminal after {timeout_s}s: {[j.status for j in jobs]}")


async def test_runs_many_jobs_concurrently(db: Database, queue: JobQueue) -> None:
    active = 0
    peak = 0

    async def sleepy(ctx: JobContext) -> dict[str, Any]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.3)
        active -= 1
        return {"n": ctx.payload["n"]}

    ids = [(await queue.submit("sleepy", {"n": i})).id for i in range(60)]
    worker = Worker(db, {"sleepy": sleepy}, config=WorkerConfig(concurrency=60, **FAST), queue=queue)
    task = asyncio.create_task(worker.run())
    t0 = time.monotonic()
    await _wait_terminal(queue, ids)
    elapsed = time.monotonic() - t0
    worker.stop()
    await task
    assert peak >= 30  # ran side by side, not one after another (60 x 0.3 s = 18 s serially)
    assert elapsed < 9
    assert [(await queue.get(i)).result for i in ids[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    kinds = [e.kind for e in await queue.events(ids[0])]
    assert kinds == ["job.submitted", "job.started", "job.completed"]


async def test_retry_restores_checkpointed_steps(db: Database, queue: JobQueue) -> None:
    calls: Counter[str] = Counter()
    flow = Flow("three")

    @flow.step()
    async def a(ctx: StepContext) -> dict[str, Any]:
        calls["a"] += 1
        return {"a": 1}

    @flow.step(after=("a",))
    async def b(ctx: StepContext) -> dict[str, Any]:
        calls["b"] += 1
        return {"b": ctx.inputs["a"]["a"] + 1}

    @flow.step(after=("b",))
    async def c(ctx: StepContext) -> dict[str, Any]:
        calls["c"] += 1
        if calls["c"] == 1:
            raise RuntimeError("flaky provider")
        return {"c": ctx.inputs["b"]["b"] + 1}

    async def handler(ctx: JobContext) -> dict[str, Any]:
        res = await run_flow(flow, {}, run_id=ctx.run_id, sink=ctx.sink, checkpoints=ctx.checkpoints)
        return {"c": res.outputs["c"]}

    job = await queue.submit("three", {}, max_attempts=3)
    worker = Worker(db, {"three": handler}, config=WorkerConfig(**FAST), queue=queue)
    task = asyncio.create_task(worker.run())
    await _wait_terminal(queue, [job.id])
    worker.stop()
    await task
    done = await queue.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.result == {"c": {"c": 3}} and done.attempts == 2
    assert calls == {"a": 1, "b": 1, "c": 2}  # the retry paid only for the failed step
    seqs = [e.seq for e in await queue.events(job.id, limit=10_000)]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_permanent_error_and_unknown_kind_dead_letter(db: Database, queue: JobQueue) -> None:
    async def bad(ctx: JobContext) -> dict[str, Any]:
        raise InputError("the outline is empty.")

    j1 = await queue.submit("bad", {}, max_attempts=5)
    j2 = await queue.submit("nobody-handles-this", {})
    worker = Worker(db, {"bad": bad}, config=WorkerConfig(**FAST), queue=queue)
    task = asyncio.create_task(worker.run())
    await _wait_terminal(queue, [j1.id, j2.id])
    worker.stop()
    await task
    f1, f2 = await queue.get(j1.id), await queue.get(j2.id)
    assert f1.status is JobStatus.FAILED and f1.attempts == 1 and "outline is empty" in (f1.error or "")
    assert f2.status is JobStatus.FAILED and "no handler" in (f2.error or "")


async def test_cancel_running_job_stops_it_within_a_heartbeat(db: Database, queue: JobQueue) -> None:
    started = asyncio.Event()

    async def forever(ctx: JobContext) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)
        return {}

    job = await queue.submit("forever", {})
    worker = Worker(db, {"forever": forever}, config=WorkerConfig(**FAST), queue=queue)
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        await started.wait()
    t0 = time.monotonic()
    await queue.cancel(job.id)
    await _wait_terminal(queue, [job.id])
    assert time.monotonic() - t0 < 3.0
    assert (await queue.get(job.id)).status is JobStatus.CANCELLED
    worker.stop()
    await task


async def test_stop_releases_unfinished_jobs_without_spending_attempts(db: Database, queue: JobQueue) -> None:
    started = asyncio.Event()

    async def slow(ctx: JobContext) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)
        return {}

    job = await queue.submit("slow", {})
    cfg = WorkerConfig(grace_s=0.2, **FAST)
    worker = Worker(db, {"slow": slow}, config=cfg, queue=queue)
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        await started.wait()
    worker.stop()
    async with asyncio.timeout(10):
        await task
    back = await queue.get(job.id)
    assert back.status is JobStatus.PENDING and back.attempts == 0 and back.lease_owner is None
    assert "job.released" in [e.kind for e in await queue.events(job.id)]


async def test_memory_guard_stops_claiming(db: Database, queue: JobQueue) -> None:
    async def ok(ctx: JobContext) -> dict[str, Any]:
        return {}

    job = await queue.submit("ok", {})
    worker = Worker(db, {"ok": ok}, config=WorkerConfig(max_rss_mb=1, **FAST), queue=queue)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.4)
    assert (await queue.get(job.id)).status is JobStatus.PENDING
    worker.stop()
    await task


class _SlowHeartbeatQueue(JobQueue):
    """A heartbeat that takes long, so claims land while its UPDATE is in flight (a loaded box)."""

    async def heartbeat(self, worker_id: str, *, lease_s: float, job_ids: Any = None) -> Any:
        await asyncio.sleep(0.3)
        return await super().heartbeat(worker_id, lease_s=lease_s, job_ids=job_ids)


async def test_job_claimed_during_a_heartbeat_is_not_taken_for_lost(db: Database) -> None:
    queue = _SlowHeartbeatQueue(db)
    done: list[int] = []

    async def short(ctx: JobContext) -> dict[str, Any]:
        await asyncio.sleep(0.5)
        done.append(ctx.payload["n"])
        return {}

    first = await queue.submit("short", {"n": 0})
    worker = Worker(db, {"short": short}, config=WorkerConfig(concurrency=50, **FAST), queue=queue)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.25)  # the first beat is under way: submit more, claimed mid-beat
    later = [(await queue.submit("short", {"n": i})).id for i in range(1, 30)]
    await _wait_terminal(queue, [first.id, *later])
    worker.stop()
    await task
    jobs = [await queue.get(j) for j in [first.id, *later]]
    assert all(j.status is JobStatus.COMPLETED for j in jobs)
    assert all(j.attempts == 1 for j in jobs), [j.attempts for j in jobs]
