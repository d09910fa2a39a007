"""Jobs that wait without a worker slot: for their children or for a signal (both databases)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from storyloom.errors import ConflictError, JobNotFoundError
from storyloom.jobs import JobQueue, JobStatus, WaitFor
from storyloom.jobs.context import JobContext
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.store import Database

FAST: dict[str, Any] = {"heartbeat_s": 0.1, "poll_s": 0.02, "schedule_every_s": None}


async def _until(queue: JobQueue, job_id: str, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = await queue.get(job_id)
        if job.status.is_terminal:
            return job
        await asyncio.sleep(0.03)
    raise AssertionError(f"job {job_id} still {job.status.value} after {timeout_s}s")


async def _parent(ctx: JobContext) -> dict[str, Any]:
    """Enqueue three children (idempotently: the re-run finds them) and wait for them."""
    kids = [
        await ctx.queue.submit(
            "child", {"n": i}, parent_id=ctx.job.id, idempotency_key=f"{ctx.job.id}:child:{i}"
        )
        for i in range(3)
    ]
    fresh = [await ctx.queue.get(k.id) for k in kids]
    if not all(k.status.is_terminal for k in fresh):
        raise ctx.wait_for_children()
    return {"sum": sum((k.result or {}).get("n", 0) for k in fresh)}


async def _child(ctx: JobContext) -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return {"n": ctx.payload["n"] + 1}


async def test_parent_waits_for_children_on_a_single_slot(db: Database, queue: JobQueue) -> None:
    """concurrency=1: the parent must give its slot up or its children never run (deadlock)."""
    parent = await queue.submit("parent", {})
    worker = Worker(
        db, {"parent": _parent, "child": _child}, config=WorkerConfig(concurrency=1, **FAST), queue=queue
    )
    task = asyncio.create_task(worker.run())
    try:
        done = await _until(queue, parent.id)
    finally:
        worker.stop()
        await task
    assert done.status is JobStatus.COMPLETED and done.result == {"sum": 6}
    assert done.attempts == 1  # waiting is not an attempt
    assert len(await queue.children(parent.id)) == 3  # the re-run found the same children
    kinds = [e.kind for e in await queue.events(parent.id)]
    assert kinds.count("job.waiting") >= 1 and kinds.count("job.resumed") == kinds.count("job.waiting")
    assert kinds[-1] == "job.completed"


async def test_waiting_job_is_not_claimable_and_wakes_on_last_child(queue: JobQueue) -> None:
    parent = await queue.submit("parent", {})
    [p] = await queue.claim("w", limit=1, lease_s=10)
    a = await queue.submit("child", {}, parent_id=parent.id)
    b = await queue.submit("child", {}, parent_id=parent.id)
    assert await queue.suspend(p.id, "w", WaitFor(children=True)) is JobStatus.WAITING
    waiting = await queue.get(parent.id)
    assert waiting.status is JobStatus.WAITING and waiting.lease_owner is None
    assert waiting.wait_for == {"children": True} and waiting.attempts == 0
    got = await queue.claim("w", limit=10, lease_s=10)
    assert {j.id for j in got} == {a.id, b.id}  # the children, never the waiting parent
    assert await queue.complete(a.id, "w", {})
    assert (await queue.get(parent.id)).status is JobStatus.WAITING  # one child still running
    assert await queue.fail(b.id, "w", "boom", retryable=False) is JobStatus.FAILED  # any end counts
    resumed = await queue.get(parent.id)
    assert resumed.status is JobStatus.PENDING and resumed.wait_for is None
    [again] = await queue.claim("w", limit=1, lease_s=10)
    assert again.id == parent.id and again.attempts == 1


async def test_children_already_done_requeue_at_once(queue: JobQueue) -> None:
    parent = await queue.submit("parent", {})
    await queue.claim("w", limit=1, lease_s=10)
    assert await queue.suspend(parent.id, "w", WaitFor(children=True)) is JobStatus.PENDING
    kinds = [e.kind for e in await queue.events(parent.id)]
    assert kinds[-2:] == ["job.waiting", "job.resumed"]


async def test_signal_wakes_a_waiting_job_and_is_kept_if_early(db: Database, queue: JobQueue) -> None:
    async def chooser(ctx: JobContext) -> dict[str, Any]:
        got = await ctx.signals()
        if "choice" not in got:
            raise ctx.wait_for_signal("choice")
        return {"chosen": got["choice"]["version"], "early": got.get("early")}

    worker = Worker(db, {"chooser": chooser}, config=WorkerConfig(concurrency=1, **FAST), queue=queue)
    job = await queue.submit("chooser", {}, tenant="alice")
    await queue.signal(job.id, "early", 1)  # before any wait: stored, not lost
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 10
        while (await queue.get(job.id)).status is not JobStatus.WAITING:
            assert time.monotonic() < deadline, "the job never parked"
            await asyncio.sleep(0.03)
        assert worker.running == 0  # parked: no slot held
        with pytest.raises(JobNotFoundError):
            await queue.signal(job.id, "choice", {"version": 9}, tenant="bob")
        await queue.signal(job.id, "other", None)  # not what it waits for
        await asyncio.sleep(0.2)
        assert (await queue.get(job.id)).status is JobStatus.WAITING
        await queue.signal(job.id, "choice", {"version": 2}, tenant="alice")
        done = await _until(queue, job.id)
    finally:
        worker.stop()
        await task
    assert done.status is JobStatus.COMPLETED and done.result == {"chosen": 2, "early": 1}
    with pytest.raises(ConflictError):
        await queue.signal(job.id, "choice", {"version": 3})


async def test_wait_timeout_makes_the_job_claimable(queue: JobQueue) -> None:
    job = await queue.submit("k", {})
    await queue.claim("w", limit=1, lease_s=10)
    assert await queue.suspend(job.id, "w", WaitFor(signal="never", timeout_s=0.2)) is JobStatus.WAITING
    assert await queue.claim("w", limit=1, lease_s=10) == []
    await asyncio.sleep(0.3)
    [again] = await queue.claim("w", limit=1, lease_s=10)
    assert again.id == job.id and again.wait_for is None


async def test_cancelling_a_waiting_parent_cancels_its_children(queue: JobQueue) -> None:
    parent = await queue.submit("parent", {})
    await queue.claim("w", limit=1, lease_s=10)
    kid = await queue.submit("child", {}, parent_id=parent.id)
    await queue.suspend(parent.id, "w", WaitFor(children=True))
    assert (await queue.cancel(parent.id)).status is JobStatus.CANCELLED
    assert (await queue.get(kid.id)).status is JobStatus.CANCELLED


async def test_suspend_after_losing_the_lease_changes_nothing(queue: JobQueue) -> None:
    job = await queue.submit("k", {})
    await queue.claim("w", limit=1, lease_s=10)
    assert await queue.suspend(job.id, "someone-else", WaitFor(children=True)) is None
    assert (await queue.get(job.id)).status is JobStatus.RUNNING


def test_wait_for_needs_one_condition() -> None:
    with pytest.raises(ValueError):
        WaitFor()
    with pytest.raises(ValueError):
        WaitFor(children=True, signal="x")
