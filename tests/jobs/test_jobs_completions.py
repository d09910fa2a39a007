"""`Completion.run_batch`: a commit's completions in a fixed few statements (both databases), with
the outcomes running them one by one gives."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.jobs import JobQueue, JobStatus, WaitFor
from storyloom.jobs.completions import Completion
from storyloom.jobs.durable import GroupCommitWriter
from storyloom.store import Database


async def test_a_batch_completes_its_own_jobs_and_fences_the_rest(db: Database, queue: JobQueue) -> None:
    jobs = [await queue.submit("k", {"n": i}) for i in range(4)]
    mine = {j.id for j in await queue.claim("w", limit=3, lease_s=30)}
    [theirs] = await queue.claim("other", limit=1, lease_s=30)
    ids = [j.id for j in jobs if j.id in mine]
    batch = [
        Completion(ids[0], "w", {"n": 0}, 1.0),
        Completion(ids[1], "w", {"n": 1}, 2.0),
        Completion(theirs.id, "w", {}, 3.0),  # not its lease
        Completion(ids[0], "w", {"again": True}, 4.0),  # already completed by the first
        Completion(ids[2], "thief", {}, 5.0),  # not its lease
        Completion(ids[2], "w", {"n": 2}, 6.0),  # the same job, by its owner
    ]
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    async def tx(conn: AsyncConnection) -> list[bool]:
        sa.event.listen(conn.sync_connection, "before_cursor_execute", count)
        return await Completion.run_batch(conn, batch)

    assert await db.transaction(tx) == [True, True, False, False, False, True]
    assert statements <= 3  # not three per job
    for job_id, result, finished in (
        (ids[0], {"n": 0}, 1.0),
        (ids[1], {"n": 1}, 2.0),
        (ids[2], {"n": 2}, 6.0),
    ):
        done = await queue.get(job_id)
        assert done.status is JobStatus.COMPLETED and done.result == result
        assert done.finished_at == finished and done.lease_owner is None
        stored = await queue.events(job_id)
        assert [e.kind for e in stored] == ["job.submitted", "job.completed"]
        assert [e.seq for e in stored] == [1, 2]
    assert (await queue.get(theirs.id)).status is JobStatus.RUNNING


async def test_a_batch_wakes_the_parent_whose_last_child_it_completes(queue: JobQueue) -> None:
    parent = await queue.submit("parent", {})
    await queue.claim("w", limit=1, lease_s=10)
    kids = [await queue.submit("child", {}, parent_id=parent.id) for _ in range(2)]
    assert await queue.suspend(parent.id, "w", WaitFor(children=True)) is JobStatus.WAITING
    assert len(await queue.claim("w", limit=10, lease_s=10)) == 2
    batch = [Completion(k.id, "w", {}, 1.0) for k in kids]
    assert await queue.db.transaction(lambda conn: Completion.run_batch(conn, batch)) == [True, True]
    assert (await queue.get(parent.id)).status is JobStatus.PENDING


async def test_the_writer_runs_one_commits_completions_in_one_call(db: Database, queue: JobQueue) -> None:
    for i in range(5):
        await queue.submit("k", {"n": i})
    claimed = await queue.claim("w", limit=5, lease_s=30)
    calls: list[int] = []
    run_batch = Completion.run_batch

    class Counted(Completion):
        __slots__ = ()

        @staticmethod
        async def run_batch(conn: AsyncConnection, batch: object) -> list[bool]:
            calls.append(len(batch))  # type: ignore[arg-type]
            return await run_batch(conn, batch)  # type: ignore[arg-type]

    writer = GroupCommitWriter(db, linger_s=0.2, min_interval_s=0.0)
    await writer.start()
    try:
        done = await asyncio.gather(
            *(writer.commit_with(Counted(j.id, "w", {}, 1.0)) for j in claimed),
            writer.commit_with(Counted(claimed[0].id, "thief", {}, 1.0)),
        )
    finally:
        await writer.stop()
    assert done == [True] * 5 + [False]
    assert calls == [6]
    assert {(await queue.get(j.id)).status for j in claimed} == {JobStatus.COMPLETED}
