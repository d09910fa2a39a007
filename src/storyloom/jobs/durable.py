"""Durable checkpoints and events for the flow engine, written by one group-commit writer.

SQLite has one writer; thousands of steps per second cannot each pay a commit. A process runs a
single `GroupCommitWriter` task: runs hand it checkpoint rows (and `await` the commit of the batch
that holds them, so a step's result is durable before its dependents start) and event rows (fire
and forget: `emit` is sync). Whatever arrives while a commit is in flight goes into the next one,
so the batch grows with the load and a commit costs one fsync for many steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from storyloom.flow.types import Event
from storyloom.logs import get_logger
from storyloom.store.database import Database
from storyloom.store.schema import checkpoints, events

__all__ = ["DurableCheckpoints", "GroupCommitWriter", "JobEventSink"]

_log = get_logger("storyloom.jobs.durable")


@dataclass(slots=True)
class _Batch:
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class GroupCommitWriter:
    def __init__(
        self,
        db: Database,
        *,
        linger_s: float = 0.002,
        max_rows: int = 5000,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.linger_s = linger_s
        self.max_rows = max_rows
        self.on_commit = on_commit
        self._pending = _Batch()
        self._has_work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.rows_committed = 0
        self.checkpoints_committed = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commit everything queued, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(Exception):
            await self.flush()
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def add_event(self, row: dict[str, Any]) -> None:
        self._pending.events.append(row)
        self._has_work.set()

    async def save_checkpoint(self, run_id: str, step: str, value: Any) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.checkpoints.append(
            {"run_id": run_id, "step": step, "value": value, "created_at": time.time()}
        )
        self._pending.waiters.append(fut)
        self._has_work.set()
        await self._ensure_running()
        await fut

    async def flush(self) -> None:
        """Return once everything added before this call is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.waiters.append(fut)
        self._has_work.set()
        await self._ensure_running()
        await fut

    async def _ensure_running(self) -> None:
        if self._task is None:
            await self.start()

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            if self.linger_s > 0:
                await asyncio.sleep(self.linger_s)
            self._has_work.clear()
            batch, self._pending = self._pending, _Batch()
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                self._fail(batch, RuntimeError("the writer stopped before committing"))
                raise
            except Exception as exc:
                _log.error("group_commit_failed", error=str(exc), events=len(batch.events))
                self._fail(batch, exc)
                # Events have no waiter to tell: keep them, in order, for the next attempt.
                self._pending.events[:0] = batch.events
                self._has_work.set()
                await asyncio.sleep(0.5)
                continue
            for fut in batch.waiters:
                if not fut.done():
                    fut.set_result(None)

    async def _commit(self, batch: _Batch) -> None:
        if not batch.events and not batch.checkpoints:
            return
        async with self.db.write() as conn:
            if batch.events:
                # A zombie run (lease lost, not yet noticed) may reuse a seq: the first write wins.
                stmt = self.db.insert(events).on_conflict_do_nothing(index_elements=["job_id", "seq"])
                for i in range(0, len(batch.events), self.max_rows):
                    await conn.execute(stmt, batch.events[i : i + self.max_rows])
            if batch.checkpoints:
                ins = self.db.insert(checkpoints)
                upsert = ins.on_conflict_do_update(
                    index_elements=["run_id", "step"],
                    set_={"value": ins.excluded.value, "created_at": ins.excluded.created_at},
                )
                await conn.execute(upsert, _last_per_key(batch.checkpoints))
        self.commits += 1
        self.rows_committed += len(batch.events) + len(batch.checkpoints)
        self.checkpoints_committed += len(batch.checkpoints)
        if self.on_commit is not None and batch.events:
            self.on_commit()

    @staticmethod
    def _fail(batch: _Batch, exc: BaseException) -> None:
        for fut in batch.waiters:
            if not fut.done():
                fut.set_exception(exc)


def _last_per_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Postgres refuses one upsert that touches the same key twice; keep the newest row per key."""
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        by_key[(row["run_id"], row["step"])] = row
    return list(by_key.values())


class DurableCheckpoints:
    """`flow.types.CheckpointStore` on the database: `save` returns once the row is committed."""

    def __init__(self, db: Database, writer: GroupCommitWriter) -> None:
        self.db = db
        self.writer = writer

    async def load(self, run_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(checkpoints.c.step, checkpoints.c.value).where(checkpoints.c.run_id == run_id)
            )
            return {step: value for step, value in rows}

    async def save(self, run_id: str, step: str, value: Any) -> None:
        await self.writer.save_checkpoint(run_id, step, value)


class JobEventSink:
    """`flow.types.EventSink` for one job: assigns the per-job `seq` and buffers into the writer.

    One run of a job is active at a time (its lease), so an in-process counter seeded from the
    stored maximum at run start gives a gap-free, race-free sequence.
    """

    def __init__(self, writer: GroupCommitWriter, job_id: str, *, last_seq: int) -> None:
        self.writer = writer
        self.job_id = job_id
        self.last_seq = last_seq

    @classmethod
    async def open(cls, db: Database, writer: GroupCommitWriter, job_id: str) -> JobEventSink:
        async with db.read() as conn:
            last = await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0)).where(events.c.job_id == job_id)
            )
        return cls(writer, job_id, last_seq=int(last or 0))

    def emit(self, event: Event) -> None:
        self.append(event.kind, event.data, step=event.step, ts=event.ts)

    def append(
        self, kind: str, data: dict[str, Any], *, step: str | None = None, ts: float | None = None
    ) -> int:
        self.last_seq += 1
        self.writer.add_event(
            {
                "job_id": self.job_id,
                "seq": self.last_seq,
                "kind": kind,
                "step": step,
                "ts": ts if ts is not None else time.time(),
                "data": data,
            }
        )
        return self.last_seq
