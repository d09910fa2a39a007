"""Durable checkpoints and events for the flow engine, written by one group-commit writer.

SQLite has one writer; thousands of steps per second cannot each pay a commit. A process runs a
single `GroupCommitWriter`: runs hand it checkpoint rows (and `await` the commit of the batch that
holds them, so a step's result is durable before its dependents start) and event rows (fire and
forget: `emit` is sync). Whatever arrives while a commit is in flight goes into the next one, so
the batch grows with the load and a commit costs one fsync for many steps.

Batches are cut on a thread of their own and committed through `Database.transaction_blocking`
(the database's write thread), never on the worker's event loop: there, a commit is several awaits
and each waits a whole turn of a loop busy with hundreds of model streams, all while holding
SQLite's write lock (see `store.database`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.flow.types import Event
from storyloom.jobs.metrics import COMMIT_LAG, observe_all
from storyloom.logs import get_logger
from storyloom.store.bulk import Rows, insert_events, upsert_checkpoints
from storyloom.store.database import Database
from storyloom.store.schema import checkpoints, events, usage

__all__ = ["DurableCheckpoints", "GroupCommitWriter", "JobEventSink"]

_log = get_logger("storyloom.jobs.durable")
T = TypeVar("T")


@dataclass(slots=True)
class _Batch:
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    # Transactions run after the rows, in the same commit (`commit_with`), and who waits on each.
    finals: list[tuple[Callable[[AsyncConnection], Awaitable[Any]], asyncio.Future[Any]]] = field(
        default_factory=list
    )


class GroupCommitWriter:
    def __init__(
        self,
        db: Database,
        *,
        linger_s: float = 0.002,
        min_interval_s: float = 0.02,
        max_rows: int = 5000,
        on_commit: Callable[[], None] | None = None,
        retry_s: float = 0.5,
    ) -> None:
        self.db = db
        self.linger_s = linger_s
        self.min_interval_s = min_interval_s
        self._last_commit = 0.0  # time.monotonic() of the last commit
        self.max_rows = max_rows
        self.on_commit = on_commit
        self.retry_s = retry_s
        self._pending = _Batch()
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._idle = False  # the thread waits on _has_work (set and read under _lock)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._owner: asyncio.AbstractEventLoop | None = None  # where on_commit runs
        self.commits = 0
        self.rows_committed = 0
        self.checkpoints_committed = 0

    async def start(self) -> None:
        if self._thread is None:
            self._owner = asyncio.get_running_loop()
            self._stopping = False
            self._thread = threading.Thread(target=self._thread_main, name="group-commit", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        """Commit everything queued, then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(Exception):
            await self.flush()
        with self._lock:
            self._stopping = True
            self._has_work.notify()
        await asyncio.to_thread(thread.join)
        self._thread = None

    def add_event(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._pending.events.append(row)
            if self._idle:  # else the thread is committing or lingering and takes it next
                self._has_work.notify()

    def add_usage(self, row: dict[str, Any]) -> None:
        """One model call's usage row (fire and forget, like events; `flush` waits for it)."""
        with self._lock:
            self._pending.usage.append(row)
            if self._idle:
                self._has_work.notify()

    async def save_checkpoint(self, run_id: str, step: str, value: Any) -> None:
        await self._ensure_running()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        row = {"run_id": run_id, "step": step, "value": value, "created_at": time.time()}
        with self._lock:
            self._pending.checkpoints.append(row)
            self._pending.waiters.append(fut)
            self._has_work.notify()
        await fut

    async def flush(self) -> None:
        """Return once everything added before this call is committed."""
        await self._ensure_running()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending.waiters.append(fut)
            self._has_work.notify()
        await fut

    async def commit_with(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `fn(conn)` in the commit of everything added before this call, after those rows,
        and return its result once committed: a job's completion lands with its last events, one
        commit and one hand-over instead of a flush and then a transaction of its own.

        An `fn` with a `run_batch(conn, fns)` attribute (a job's `Completion`) runs together with
        the other finals of this commit that have the same one, one call for all of them."""
        await self._ensure_running()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending.finals.append((fn, fut))
            self._has_work.notify()
        return await fut

    async def _ensure_running(self) -> None:
        if self._thread is None:
            await self.start()

    # ---- the commit thread ---------------------------------------------------------------------

    def _thread_main(self) -> None:
        while self._next_batch():
            pass

    def _next_batch(self) -> bool:
        """Wait for work, commit one batch; False once stopped with nothing left to commit."""
        with self._lock:
            while not self._has_pending() and not self._stopping:
                self._idle = True
                self._has_work.wait()
                self._idle = False
            if not self._has_pending():
                return False
        # Let a burst of rows join this commit, and commit at most every `min_interval_s`: each
        # commit costs the write lock, a wake-up of every API process and a poll there, whatever
        # its size; at 200 jobs streaming, commits every 2 ms were mostly a few deltas each.
        wait_s = max(self.linger_s, self._last_commit + self.min_interval_s - time.monotonic())
        if wait_s > 0:
            time.sleep(wait_s)
        with self._lock:
            batch, self._pending = self._pending, _Batch()
        results: list[Any] = []
        try:
            if batch.events or batch.checkpoints or batch.usage or batch.finals:  # a flush alone: done
                self.db.transaction_blocking(self._commit_fn(batch, results))
        except Exception as exc:
            _log.error("group_commit_failed", error=str(exc), events=len(batch.events))
            _resolve(batch.waiters, exc)
            _resolve([fut for _, fut in batch.finals], exc)
            with self._lock:  # events have no waiter to tell: keep them, in order, for the next try
                if self._stopping:
                    _log.error("group_commit_gave_up", events=len(batch.events) + len(self._pending.events))
                    return False
                self._pending.events[:0] = batch.events
                self._pending.usage[:0] = batch.usage
            time.sleep(self.retry_s)
            return True
        self._last_commit = time.monotonic()
        self._count(batch)
        _resolve(batch.waiters, None)
        _deliver([fut for _, fut in batch.finals], results)
        if self.on_commit is not None and (batch.events or batch.finals) and self._owner is not None:
            with contextlib.suppress(RuntimeError):  # the owner's loop is closed: nobody to tell
                self._owner.call_soon_threadsafe(self.on_commit)
        return True

    def _has_pending(self) -> bool:
        p = self._pending
        return bool(p.events or p.checkpoints or p.usage or p.waiters or p.finals)

    def _commit_fn(self, batch: _Batch, results: list[Any]) -> Callable[[AsyncConnection], Awaitable[None]]:
        db = self.db
        # Packed here, on this thread, before the transaction takes the write lock.
        event_chunks = [
            Rows(db, batch.events[i : i + self.max_rows]) for i in range(0, len(batch.events), self.max_rows)
        ]
        latest = Rows(db, _last_per_key(batch.checkpoints))
        calls = batch.usage
        finals = batch.finals

        async def commit(conn: AsyncConnection) -> None:
            for chunk in event_chunks:
                await insert_events(db, conn, chunk)
            await upsert_checkpoints(db, conn, latest)
            if calls:  # a few per step: executemany is cheap next to the events
                await conn.execute(sa.insert(usage), calls)
            results.clear()  # a rolled-back try of this batch left its results here
            i = 0
            while i < len(finals):  # consecutive finals of one batchable kind: one call for all
                run_batch = _batch_runner(finals[i][0])
                if run_batch is None:
                    results.append(await finals[i][0](conn))
                    i += 1
                    continue
                j = i + 1
                while j < len(finals) and _batch_runner(finals[j][0]) == run_batch:
                    j += 1
                results.extend(await run_batch(conn, [fn for fn, _ in finals[i:j]]))
                i = j

        return commit

    def _count(self, batch: _Batch) -> None:
        if not batch.events and not batch.checkpoints:
            return
        now = time.time()
        self.commits += 1
        self.rows_committed += len(batch.events) + len(batch.checkpoints)
        self.checkpoints_committed += len(batch.checkpoints)
        observe_all(COMMIT_LAG, [max(0.0, now - row["ts"]) for row in batch.events])


def _batch_runner(fn: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
    """A final's `run_batch(conn, fns) -> results` if it has one (`jobs.completions.Completion`):
    the finals of one commit that share it run in one call, each still getting its own result."""
    return getattr(fn, "run_batch", None)


def _resolve(waiters: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    """Settle futures that belong to other loops: one wake-up per loop, not one per future."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for fut in waiters:
        by_loop.setdefault(fut.get_loop(), []).append(fut)
    for loop, futs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, futs, exc)


def _deliver(futs: list[asyncio.Future[Any]], results: list[Any]) -> None:
    """Settle each future with its own result, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for fut, result in zip(futs, results, strict=True):
        by_loop.setdefault(fut.get_loop(), []).append((fut, result))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_set_results, pairs)


def _set_results(pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, result in pairs:
        if not fut.done():
            fut.set_result(result)


def _settle(futs: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    for fut in futs:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(None)
        else:
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
        # Runs the worker knows to have no checkpoint yet (fresh jobs): `load` skips the query once.
        self.known_empty: set[str] = set()

    async def load(self, run_id: str) -> dict[str, Any]:
        if run_id in self.known_empty:
            self.known_empty.discard(run_id)
            return {}
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
