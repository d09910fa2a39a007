"""`GroupCommitWriter.commit_with`: a transaction committed with the rows added before it."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.jobs import JobQueue
from storyloom.jobs.durable import GroupCommitWriter, JobEventSink
from storyloom.jobs.models import JobStatus
from storyloom.store import Database
from storyloom.store.schema import events


async def test_a_completion_lands_after_the_runs_events_in_one_commit(db: Database, queue: JobQueue) -> None:
    job = await queue.submit("k", {})
    [claimed] = await queue.claim("w", limit=1, lease_s=30)
    writer = GroupCommitWriter(db, min_interval_s=0.0)
    await writer.start()
    try:
        sink = await JobEventSink.open(db, writer, job.id)
        for i in range(5):
            sink.append("step.delta", {"i": i})
        commits = writer.commits
        assert await writer.commit_with(queue.completion(claimed.id, "w", {"ok": True}))
        assert writer.commits == commits + 1  # the events and the completion: one commit
        assert not await writer.commit_with(queue.completion(claimed.id, "thief", {}))  # fenced
    finally:
        await writer.stop()
    done = await queue.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.result == {"ok": True}
    stored = await queue.events(job.id)
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert [e.kind for e in stored][-6:] == ["step.delta"] * 5 + ["job.completed"]


async def test_a_failing_transaction_fails_its_caller_and_keeps_the_rows(
    db: Database, queue: JobQueue
) -> None:
    job = await queue.submit("k", {})
    writer = GroupCommitWriter(db, min_interval_s=0.0, retry_s=0.05)
    await writer.start()

    async def broken(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT no_such_column FROM jobs"))

    try:
        sink = await JobEventSink.open(db, writer, job.id)
        sink.append("step.delta", {"kept": True})
        with pytest.raises(Exception, match="no_such_column"):
            async with asyncio.timeout(10):
                await writer.commit_with(broken)
        await writer.flush()  # the event is retried without it
    finally:
        await writer.stop()
    async with db.read() as conn:
        kinds = (await conn.scalars(sa.select(events.c.kind).where(events.c.job_id == job.id))).all()
    assert list(kinds) == ["job.submitted", "step.delta"]
