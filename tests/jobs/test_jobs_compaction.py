"""Compacting a finished job's deltas keeps every resumed stream exactly-once (both databases)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.jobs import EventHub, JobQueue, StoredEvent
from storyloom.jobs.compaction import ResumeCursor, compact_deltas
from storyloom.jobs.queue import append_event
from storyloom.store import Database
from storyloom.store.schema import events

# Two steps streaming side by side, so their deltas interleave.
_LOG: list[tuple[str, str | None, dict[str, Any]]] = [
    ("step.started", "plot", {}),
    ("step.delta", "plot", {"text": "Once ", "since": 1.0}),
    ("step.delta", "plot", {"text": "upon ", "since": 1.1}),
    ("step.started", "scene", {}),
    ("step.delta", "scene", {"text": "雨夜", "since": 1.2}),
    ("step.delta", "plot", {"text": "a time", "since": 1.3}),
    ("step.delta", "scene", {"text": "，灯火", "since": 1.4}),
    ("step.finished", "plot", {}),
    ("step.delta", "scene", {"text": "。", "since": 1.5}),
    ("step.finished", "scene", {}),
]


async def _finished_job(queue: JobQueue) -> str:
    job = await queue.submit("k", {})
    await queue.claim("w", limit=1, lease_s=30)

    async def write(conn: AsyncConnection) -> None:
        for kind, step, data in _LOG:
            await append_event(conn, job.id, kind, data, step=step)

    await queue.db.transaction(write)
    assert await queue.complete(job.id, "w", {"ok": True})
    return job.id


def _texts(evs: list[StoredEvent]) -> dict[str, str]:
    out: dict[str, str] = {}
    for ev in evs:
        if ev.kind == "step.delta":
            assert ev.step is not None
            out[ev.step] = out.get(ev.step, "") + ev.data["text"]
    return out


async def _stream(hub: EventHub, job_id: str, after: int) -> list[StoredEvent]:
    async with hub.subscribe(job_id, after) as sub:
        return [ev async for ev in sub]


async def _rows(db: Database, job_id: str) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).where(events.c.job_id == job_id)) or 0)


async def test_resume_from_any_point_after_compaction_gets_exactly_the_missing_text(
    db: Database, queue: JobQueue
) -> None:
    job_id = await _finished_job(queue)
    original = await queue.events(job_id)
    last = original[-1].seq
    hub = EventHub(db)
    await hub.start()
    try:
        before = {k: _texts(await _stream(hub, job_id, k)) for k in range(last)}  # after last: nothing
        rows_before = await _rows(db, job_id)
        assert await compact_deltas(db, older_than_s=60) == {"jobs": 0, "removed": 0, "written": 0}
        done = await compact_deltas(db, older_than_s=60, now=time.time() + 61)
        assert done == {"jobs": 1, "removed": 6, "written": 2}
        assert await _rows(db, job_id) == rows_before - 4
        compacted = await queue.events(job_id)
        assert compacted[-1].seq == last and compacted[-1].kind == "job.completed"  # 204 logic intact
        seqs = [ev.seq for ev in compacted]
        assert seqs == sorted(seqs)
        for k in range(last):
            assert _texts(await _stream(hub, job_id, k)) == before[k], f"resume after {k}"
            assert _texts(await queue.events(job_id, after=k)) == before[k], f"events after {k}"
        fresh = await _stream(hub, job_id, 0)
        assert _texts(fresh) == {"plot": "Once upon a time", "scene": "雨夜，灯火。"}
        assert all("parts" not in ev.data for ev in fresh)  # bookkeeping stays in the database
        assert await compact_deltas(db, older_than_s=60, now=time.time() + 61) == {
            "jobs": 0,
            "removed": 0,
            "written": 0,
        }
    finally:
        await hub.stop()


async def test_a_reader_caught_mid_compaction_loses_and_repeats_nothing(queue: JobQueue) -> None:
    """It read the original log up to seq 5, then the rest was compacted under it."""
    job_id = await _finished_job(queue)
    original = await queue.events(job_id)
    await compact_deltas(queue.db, older_than_s=0, now=time.time() + 1)
    rest = await queue.events(job_id, after=0)  # the raw compacted rows come trimmed for after=0
    cursor = ResumeCursor(0)
    seen = [cursor.deliver(ev) for ev in original if ev.seq <= 5]
    async with queue.db.read() as conn:
        raw = (
            await conn.execute(
                sa.select(events.c.id, events.c.seq, events.c.kind, events.c.step, events.c.ts, events.c.data)
                .where(events.c.job_id == job_id, events.c.seq > 5)
                .order_by(events.c.seq)
            )
        ).all()
    seen += [
        cursor.deliver(StoredEvent(r.id, job_id, r.seq, r.kind, r.step, r.ts, r.data or {})) for r in raw
    ]
    assert _texts(seen) == _texts(original) == _texts(rest)


async def test_running_jobs_are_not_compacted(queue: JobQueue) -> None:
    job = await queue.submit("k", {})
    await queue.claim("w", limit=1, lease_s=30)

    async def write(conn: AsyncConnection) -> None:
        await append_event(conn, job.id, "step.delta", {"text": "a"}, step="s")
        await append_event(conn, job.id, "step.delta", {"text": "b"}, step="s")

    await queue.db.transaction(write)
    done = await compact_deltas(queue.db, older_than_s=0, now=time.time() + 3600)
    assert done["jobs"] == 0 and await _rows(queue.db, job.id) == 3
