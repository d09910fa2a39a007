"""Compacting the token deltas of finished jobs: one event per streamed step instead of hundreds.

A chapter job streams ~100 KB of `step.delta` rows (one per ~50 ms of each step's text), which
only a live or reconnecting stream needs. Once a job has ended and `older_than_s` has passed (no
browser is still following it), each step's deltas become one `step.delta` at the seq of its last
delta, carrying the whole text and `parts` = [[seq, chars], ...] of the deltas it replaces. The
other seqs become gaps (ids are never reused; seq order is unchanged), the terminal event keeps
its seq, so `Last-Event-ID` semantics (204 when the client has everything) are unchanged.

A client that resumes from inside a compacted range already had part of the text:
`trim_compacted` gives it only the rest. What a reader has seen of the *original* log is the
contiguous run of seqs from its resume point (`ResumeCursor`): an uncompacted log has no gaps, so
the first gap marks where compacted rows begin and freezes that point. Every stream, resumed
before, during or after compaction, stays exactly-once in text.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.jobs.models import JobStatus, StoredEvent
from storyloom.store.database import Database
from storyloom.store.schema import events, jobs

__all__ = [
    "DELTA_KIND",
    "ResumeCursor",
    "compact_deltas",
    "compact_job",
    "is_compacted",
    "trim_compacted",
]

DELTA_KIND = "step.delta"
_TERMINAL = sorted(s.value for s in JobStatus.TERMINAL)


def is_compacted(ev: StoredEvent) -> bool:
    return ev.kind == DELTA_KIND and "parts" in ev.data


def trim_compacted(ev: StoredEvent, known_seq: int) -> StoredEvent:
    """The event as a client that has every original event up to `known_seq` should get it.

    Uncompacted events are returned as they are. A compacted one loses the text of the parts the
    client had, and its `parts` (bookkeeping, not for clients): `{"text", "compacted": true,
    "from_seq"}` plus the first delta's other fields (`since`)."""
    if not is_compacted(ev):
        return ev
    data = dict(ev.data)
    parts: list[list[int]] = data.pop("parts")
    text: str = data.get("text", "")
    had = sum(chars for seq, chars in parts if seq <= known_seq)
    rest = [seq for seq, _ in parts if seq > known_seq]
    data["text"] = text[had:]
    data["from_seq"] = rest[0] if rest else ev.seq
    return dataclasses.replace(ev, data=data)


class ResumeCursor:
    """Follows one reader's position in the original log and trims compacted events for it."""

    __slots__ = ("known_seq",)

    def __init__(self, after_seq: int) -> None:
        self.known_seq = after_seq  # the reader has every original event up to here

    def deliver(self, ev: StoredEvent) -> StoredEvent:
        out = trim_compacted(ev, self.known_seq)
        if ev.seq == self.known_seq + 1:  # no gap: nothing before it was compacted away unseen
            self.known_seq = ev.seq
        return out


async def compact_job(conn: AsyncConnection, job_id: str) -> tuple[int, int]:
    """Replace the job's deltas by one per step, in `conn`. Returns (rows removed, rows written)."""
    rows = (
        await conn.execute(
            sa.select(events.c.id, events.c.seq, events.c.step, events.c.ts, events.c.data)
            .where(events.c.job_id == job_id, events.c.kind == DELTA_KIND)
            .order_by(events.c.seq)
        )
    ).all()
    by_step: dict[str | None, list[Any]] = {}
    for row in rows:
        by_step.setdefault(row.step, []).append(row)
    merged: list[dict[str, Any]] = []
    for step, group in by_step.items():
        if len(group) == 1 and "parts" in (group[0].data or {}):
            continue  # compacted already
        texts = [str((r.data or {}).get("text", "")) for r in group]
        first = dict(group[0].data or {})
        first.pop("parts", None)
        first.update(
            text="".join(texts),
            compacted=True,
            parts=[[int(r.seq), len(t)] for r, t in zip(group, texts, strict=True)],
        )
        last = group[-1]
        merged.append(
            {
                "job_id": job_id,
                "seq": last.seq,
                "kind": DELTA_KIND,
                "step": step,
                "ts": last.ts,
                "data": first,
            }
        )
    if not merged:
        return 0, 0
    steps = [m["step"] for m in merged]
    doomed = [r.id for r in rows if r.step in steps]
    for start in range(0, len(doomed), 500):
        await conn.execute(sa.delete(events).where(events.c.id.in_(doomed[start : start + 500])))
    await conn.execute(sa.insert(events), merged)
    return len(doomed), len(merged)


async def compact_deltas(
    db: Database, *, older_than_s: float, now: float | None = None, max_jobs: int = 2_000, per_tx: int = 20
) -> dict[str, int]:
    """Compact the deltas of jobs that ended over `older_than_s` ago; at most `max_jobs` per call
    (the schedule comes back for the rest), `per_tx` jobs per transaction (short write locks)."""
    now = time.time() if now is None else now
    done = {"jobs": 0, "removed": 0, "written": 0}
    while done["jobs"] < max_jobs:
        async with db.read() as conn:
            ids = list(
                (
                    await conn.scalars(
                        sa.select(jobs.c.id)
                        .where(
                            jobs.c.status.in_(_TERMINAL),
                            jobs.c.finished_at < now - older_than_s,
                            jobs.c.deltas_compacted.is_(False),
                        )
                        .order_by(jobs.c.finished_at)
                        .limit(min(per_tx, max_jobs - done["jobs"]))
                    )
                ).all()
            )
        if not ids:
            break

        async def tx(conn: AsyncConnection, ids: list[str] = ids) -> tuple[int, int]:
            removed = written = 0
            for job_id in ids:
                r, w = await compact_job(conn, job_id)
                removed, written = removed + r, written + w
            await conn.execute(sa.update(jobs).where(jobs.c.id.in_(ids)).values(deltas_compacted=True))
            return removed, written

        removed, written = await db.transaction(tx)
        done["jobs"] += len(ids)
        done["removed"] += removed
        done["written"] += written
    return done
