"""`EventHub`: one poller per process fans new event rows out to in-memory subscribers.

500 SSE clients must not mean 500 polling queries: the hub reads `job_events` by global id every
~30 ms (sooner when a writer in this process calls `wake()`) and hands each row to the subscribers
of its job. A `Subscription` registers *before* it replays from the database, then follows the live
feed, de-duplicating by the per-job `seq`; a jump in `seq` (or an overflowing buffer) sends it back
to the database for the missing range. So a subscriber sees every event exactly once, in order.

A job this process accepts is followed from before its first commit (`expect`/`keep`): its
submitter opens the stream a moment later and gets it from memory, without a read.

Postgres can commit a smaller id after a bigger one (concurrent transactions). The hub remembers
skipped ids as "holes" and re-reads them for `hole_ttl_s`, so such late rows are still delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.jobs.compaction import ResumeCursor
from storyloom.jobs.hub import HubBackend, hub_backend_from_url
from storyloom.jobs.models import TERMINAL_EVENT_KINDS, Job, StoredEvent
from storyloom.jobs.queue import read_events
from storyloom.logs import get_logger
from storyloom.store.batches import Batcher
from storyloom.store.bulk import EventRow, events_after_id, events_after_seqs, jobs_by_ids
from storyloom.store.database import Database
from storyloom.store.schema import events

__all__ = ["EventHub", "Subscription"]

_log = get_logger("storyloom.jobs.events")
_MAX_HOLES = 10_000
_PAGE = 500  # events per replay read
_MAX_EARLY = 10_000  # jobs followed before anyone asked (`expect`), at most
_Opened = tuple["Job | None", list[StoredEvent], bool]  # job, first page, whether that is all
_Early = tuple[Job, "Subscription"]


class EventHub:
    def __init__(
        self,
        db: Database,
        *,
        poll_interval_s: float = 0.03,
        idle_interval_s: float = 0.5,
        batch: int = 2000,
        buffer: int = 2000,
        hole_ttl_s: float = 30.0,
        early_ttl_s: float = 10.0,
        backend: HubBackend | None = None,
        backed_poll_interval_s: float = 0.25,
        min_poll_gap_s: float = 0.015,
    ) -> None:
        self.db = db
        # Wake-ups come in bursts (each worker's group commit, every submission here): those that
        # arrive within `min_poll_gap_s` of the last poll wait for its end and share one poll,
        # instead of one poll each. At most that much is added to an event's lag.
        self.min_poll_gap_s = min_poll_gap_s
        self._polled_at = 0.0
        # Wake-ups from other processes and machines (jobs/hub.py); while it is live the hub
        # polls only as a safety net, and as fast as without one when it is not.
        self.backend = backend
        self.backed_poll_interval_s = backed_poll_interval_s
        self._backend_task: asyncio.Task[None] | None = None
        self._read = db.read_lane()  # polls never wait behind the streams' replays in the pool
        self.poll_interval_s = poll_interval_s
        self.idle_interval_s = idle_interval_s
        self.batch = batch
        self.buffer = buffer
        self.hole_ttl_s = hole_ttl_s
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._last_id = 0
        self._holes: dict[int, float] = {}  # id -> time first missed (Postgres only)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.polls = 0  # number of poll queries, for tests and metrics
        self.delivered = 0
        # Event lag: creation (`ts`) to hand-over to subscribers, recent samples for the metrics.
        self.recent_lag_s: deque[float] = deque(maxlen=2048)
        self._opener: Batcher[tuple[str, int], _Opened] = Batcher(self._open_batch)
        # Jobs this process just accepted, followed since before their first commit, until their
        # stream claims them (`open`) or `early_ttl_s` passes; insertion order is expiry order.
        self.early_ttl_s = early_ttl_s
        self._early: dict[str, tuple[Job, Subscription, float]] = {}

    @classmethod
    def from_url(cls, db: Database, url: str | None, **options: float | int) -> EventHub:
        """A hub with the backend `url` names (`STORYLOOM_EVENT_HUB_URL`; None: polling alone).

        This process's own commits notify the other processes' hubs through the backend too."""
        backend = hub_backend_from_url(url)
        if backend is not None:
            db.add_commit_listener(backend.notify)
        return cls(db, backend=backend, **options)  # type: ignore[arg-type]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-hub")
        if self.backend is not None and self._backend_task is None:
            self._backend_task = asyncio.create_task(self.backend.run(self.wake), name="event-hub-backend")
        await self._started.wait()

    async def stop(self) -> None:
        backend_task, self._backend_task = self._backend_task, None
        if backend_task is not None:
            backend_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await backend_task
        if self.backend is not None:
            await self.backend.aclose()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subs in self._subs.values():
            for sub in subs:
                sub._closed_by_hub()
        self._subs.clear()
        self._early.clear()

    def lag_quantile(self, q: float) -> float:
        """A quantile (0..1) of the recent creation-to-delivery lags, 0.0 before any delivery."""
        if not self.recent_lag_s:
            return 0.0
        ordered = sorted(self.recent_lag_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def wake(self) -> None:
        """A writer in this process committed events: poll now instead of at the next tick."""
        self._wake.set()

    async def open(
        self, job_id: str, after_seq: int = 0, *, stop_on_terminal: bool = True
    ) -> tuple[Job | None, Subscription]:
        """`subscribe`, plus the job (None: no such job, and the subscription is closed).

        The job and the first page of the replay are read together with those of every stream
        opening at the same time (`store.batches`): 500 clients opening their streams in the
        same second cost a few queries, not a thousand (measured: p99 of opening 1.2 s before).
        """
        await self.start()  # the live feed's starting point must precede the replay read
        if (early := self._claim_early(job_id, after_seq, stop_on_terminal)) is not None:
            return early
        sub = self.subscribe(job_id, after_seq, stop_on_terminal=stop_on_terminal)
        try:
            job, page, complete = await self._opener((job_id, after_seq))
        except BaseException:
            sub.close()
            raise
        if job is None:
            sub.close()
        else:
            sub._prefill(page, complete=complete)
        return job, sub

    def expect(self, job_id: str) -> Subscription:
        """Follow a job this process is about to create, registered before its first commit.

        Its submitter asks for its stream a moment later (POST then GET, or the submit-and-stream
        route); with `keep` that stream is served from memory, with no read. Measured with 500
        submissions at once: that read, batched, was what the job's first live events waited for.
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-hub")
        sub = Subscription(self, job_id, 0, stop_on_terminal=True)
        self._subs[job_id].add(sub)  # no wake: nothing of this job is committed yet
        return sub

    def keep(self, job: Job, sub: Subscription, first: StoredEvent) -> None:
        """The job of `expect` was created with `first` (seq 1): hold it for `open`, a while."""
        sub._prefill([first], complete=True)
        self._early[job.id] = (job, sub, time.monotonic() + self.early_ttl_s)
        self._expire_early()
        while len(self._early) > _MAX_EARLY:  # a flood of submissions nobody follows: oldest go first
            self._early.pop(next(iter(self._early)))[1].close()

    def _claim_early(self, job_id: str, after_seq: int, stop_on_terminal: bool) -> _Early | None:
        entry = self._early.pop(job_id, None)
        if entry is None:
            return None
        job, sub, _ = entry
        if after_seq != 0 or not stop_on_terminal or sub._done:
            sub.close()
            return None
        return job, sub

    def _expire_early(self) -> None:
        now = time.monotonic()
        while self._early:
            job_id, (_, sub, expires) = next(iter(self._early.items()))
            if expires > now:
                return
            del self._early[job_id]
            sub.close()

    async def _open_batch(self, items: list[tuple[str, int]]) -> list[_Opened | Exception]:
        after: dict[str, int] = {}
        for job_id, seq in items:
            after[job_id] = min(seq, after.get(job_id, seq))

        async def read(conn: AsyncConnection) -> tuple[dict[str, Job], dict[str, list[EventRow]]]:
            found = {row["id"]: Job.from_mapping(row) for row in await jobs_by_ids(conn, list(after))}
            pages = await events_after_seqs(conn, {i: s for i, s in after.items() if i in found}, _PAGE)
            return found, pages

        # Off the loop (SQLite): measured on a burst of 500 POST+GET, p99 of opening 181 -> 160 ms.
        found, pages = await self.db.fetch(read)
        out: list[_Opened | Exception] = []
        # One object per row, shared by every stream of the job (its SSE frame is made once).
        shared = {job_id: [StoredEvent.from_tuple(r) for r in rows] for job_id, rows in pages.items()}
        for job_id, seq in items:
            rows = pages.get(job_id, [])
            page = [ev for ev in shared.get(job_id, ()) if ev.seq > seq]
            # a full page may have more beyond it: that subscription reads on from the database
            out.append((found.get(job_id), page, len(rows) < _PAGE))
        return out

    def subscribe(self, job_id: str, after_seq: int = 0, *, stop_on_terminal: bool = True) -> Subscription:
        """Events of `job_id` with seq > after_seq: replay from the database, then live.

        Use as `async with hub.subscribe(job, after) as sub: async for ev in sub: ...`.
        With `stop_on_terminal` the iteration ends after job.completed/failed/cancelled.
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-hub")
        sub = Subscription(self, job_id, after_seq, stop_on_terminal=stop_on_terminal)
        self._subs[job_id].add(sub)  # registered before the replay: nothing can fall in between
        self._wake.set()
        return sub

    async def wait(
        self, job_id: str, after: int, *, timeout_s: float, limit: int = 1000
    ) -> list[StoredEvent]:
        """Long poll: the events after `after`, waiting up to `timeout_s` for the first one."""
        out: list[StoredEvent] = []
        async with self.subscribe(job_id, after, stop_on_terminal=False) as sub:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    out.append(await sub.__anext__())
            if out:
                out.extend(sub.drain_ready(limit - 1))
        return out

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.job_id]

    async def _run(self) -> None:
        try:
            async with self._read() as conn:
                self._last_id = int(
                    await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0))) or 0
                )
        except Exception as exc:  # the loop below retries; subscribers replay from the DB anyway
            _log.warning("event_hub_init_failed", error=str(exc))
        # Subscribers that came before this point may have replayed before events this feed now
        # starts after: send them back to the database once.
        for subs in self._subs.values():
            for sub in subs:
                sub._resync()
        self._started.set()
        while True:
            self._expire_early()
            interval = self._interval()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            rest = self.gap_left_s(time.monotonic())
            if rest > 0:
                await asyncio.sleep(rest)  # the rest of the burst: read by this same poll
            self._wake.clear()
            try:
                while await self._poll_once() >= self.batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("event_hub_poll_failed", error=str(exc))
                await asyncio.sleep(0.5)

    def _interval(self) -> float:
        if not self._subs:
            return self.idle_interval_s
        if self.backend is not None and self.backend.live:
            return self.backed_poll_interval_s
        return self.poll_interval_s

    def gap_left_s(self, now: float) -> float:
        """How long a wake-up at `now` waits before its poll: the rest of `min_poll_gap_s` since
        the last poll (a burst shares it), nothing after a quiet spell."""
        return max(0.0, self._polled_at + self.min_poll_gap_s - now)

    async def _poll_once(self) -> int:
        now = self._polled_at = time.monotonic()
        if self._holes:
            self._holes = {i: t for i, t in self._holes.items() if now - t < self.hole_ttl_s}
        async with self._read() as conn:
            rows = await events_after_id(conn, self._last_id, self.batch, also_ids=list(self._holes))
        self.polls += 1
        for row in rows:
            ev = StoredEvent.from_tuple(row)
            if ev.id in self._holes:
                del self._holes[ev.id]
            elif ev.id > self._last_id:
                if not self.db.is_sqlite and ev.id > self._last_id + 1 and len(self._holes) < _MAX_HOLES:
                    for missing in range(self._last_id + 1, min(ev.id, self._last_id + 1 + _MAX_HOLES)):
                        self._holes[missing] = now
                self._last_id = ev.id
            subs = self._subs.get(ev.job_id)
            if subs:
                self.recent_lag_s.append(max(0.0, time.time() - ev.ts))
                for sub in list(subs):
                    sub._push(ev)
                    self.delivered += 1
        return len(rows)


class Subscription:
    """An async iterator over one job's events; see `EventHub.subscribe`.

    The live feed is a deque and one waiter future rather than an `asyncio.Queue`: a stream can
    then wait for "something to read" with a timeout (`wait_ready`, its heartbeat) without a task
    per wait and without consuming, and a push costs an append and, for the first one, one wake-up.
    """

    def __init__(self, hub: EventHub, job_id: str, after_seq: int, *, stop_on_terminal: bool) -> None:
        self.hub = hub
        self.job_id = job_id
        self.last_seq = after_seq
        self._cursor = ResumeCursor(after_seq)  # trims compacted deltas to what this reader lacks
        self.stop_on_terminal = stop_on_terminal
        self._live: deque[StoredEvent | None] = deque()  # None: go back to the database
        self._waiter: asyncio.Future[None] | None = None
        self._backlog: deque[StoredEvent] = deque()
        self._need_db = True  # replay first
        self._done = False

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._done = True
        self.hub._unsubscribe(self)
        self.interrupt()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StoredEvent:
        while not self._done:
            if self._backlog:
                ev = self._backlog.popleft()
                if ev.seq <= self.last_seq:
                    continue
                return self._deliver(ev)
            if self._need_db:
                await self._refill()
                continue
            if not self._live:
                await self._wait(None)
                continue
            ev_or_none = self._live.popleft()
            if ev_or_none is None:  # hub stopped or buffer overflowed: go back to the database
                if self._done:
                    break
                self._need_db = True
                continue
            if ev_or_none.seq <= self.last_seq:
                continue  # already replayed
            if ev_or_none.seq > self.last_seq + 1:  # a gap: the missing rows are committed; read them
                self._need_db = True
                continue
            return self._deliver(ev_or_none)
        self.close()
        raise StopAsyncIteration

    @property
    def ready(self) -> bool:
        """Whether `__anext__` would return (or end) without waiting for the hub's next poll."""
        return bool(self._backlog or self._need_db or self._live or self._done)

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for something to read (or the end); True if there is.

        Consumes nothing, so a stream's heartbeat can wait here and then read, with no task to
        cancel mid-read. `interrupt()` ends the wait early (a server shutting down)."""
        if not self.ready:
            await self._wait(timeout_s)
        return self.ready

    def interrupt(self) -> None:
        """Wake whoever waits in `wait_ready` or `__anext__` (they look again at what there is)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout_s is None else loop.call_later(timeout_s, _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if self._waiter is waiter:
                self._waiter = None

    def _prefill(self, page: list[StoredEvent], *, complete: bool) -> None:
        """The replay was read for us (`EventHub.open`), after registration like `_refill`."""
        self._backlog = deque(page)
        self._need_db = not complete

    def drain_ready(self, limit: int) -> list[StoredEvent]:
        """Events already at hand (no waiting), in order, continuing after the last one returned."""
        out: list[StoredEvent] = []
        while len(out) < limit and not self._done:
            if self._backlog:
                ev = self._backlog.popleft()
            else:
                if not self._live:
                    break
                maybe = self._live[0]
                if maybe is None or maybe.seq > self.last_seq + 1:
                    self._live.popleft()
                    self._need_db = True
                    break
                ev = maybe
                self._live.popleft()
            if ev.seq <= self.last_seq:
                continue
            out.append(self._deliver(ev))
        return out

    def _deliver(self, ev: StoredEvent) -> StoredEvent:
        self.last_seq = ev.seq
        ev = self._cursor.deliver(ev)
        if self.stop_on_terminal and ev.kind in TERMINAL_EVENT_KINDS:
            self._done = True
            self.hub._unsubscribe(self)
        return ev

    async def _refill(self) -> None:
        # Drop what the live buffer holds: the database read below includes all of it or more.
        self._live.clear()
        async with self.hub.db.read() as conn:
            page = await read_events(conn, self.job_id, self.last_seq, _PAGE)
        self._backlog = deque(page)
        self._need_db = len(page) == _PAGE

    def _push(self, ev: StoredEvent) -> None:
        if self._done:
            return
        if len(self._live) >= self.hub.buffer:
            # A slow reader: forget the buffer and let it catch up from the database.
            self._live.clear()
            self._live.append(None)
        else:
            self._live.append(ev)
        self.interrupt()
        if self.stop_on_terminal and ev.kind in TERMINAL_EVENT_KINDS:
            # Nothing follows: let go now, so that a stream whose reader never started (a client
            # gone before its response began) is not kept for the hub's lifetime.
            self.hub._unsubscribe(self)

    def _resync(self) -> None:
        if not self._done:
            self._live.append(None)
            self.interrupt()

    def _closed_by_hub(self) -> None:
        self._done = True
        self._live.append(None)
        self.interrupt()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Subscription(job={self.job_id!r}, last_seq={self.last_seq})"


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
