"""`WriteThread`: every write transaction of a process, batched, on a thread and loop of its own.

Why a thread: a transaction run on a loop busy with hundreds of model streams holds the database's
write lock (SQLite has exactly one) for a whole loop turn per statement. Measured at 500 chapter
jobs on 2 cores: the API's submissions alone held SQLite's lock 7.7 s out of 35, and workers waited
up to 2.3 s to commit a step. Here the lock is held only while SQL runs.

Why batches: even so, each transaction pays for the lock, a commit, and several GIL hand-overs
from a busy main thread; at ~30 transactions per second per process the thread itself became the
queue. So the thread runs whatever transactions are waiting one after the other inside one
`BEGIN ... COMMIT` (up to `max_batch_s` of work) and settles them all after the commit. The cap
is short (10 ms) because every other process waits for it: at 50 ms, the API's batches of 500
arriving submissions held the lock 55-95 ms at a time, and the workers' events waited ~120 ms. If one of
them raises, the batch is rolled back and each is run again alone, so every caller still gets its
own outcome and nobody's writes depend on another's. A caller that stops waiting (cancelled) before
its transaction started skips it; once started, it runs to its end.

Why `flock` (SQLite): between processes, SQLite's own wait (`busy_timeout`) sleeps and retries with
growing pauses (up to 100 ms) and is unfair: a worker waited over a second while others came and
went. The write threads of all processes take an `flock` on a file beside the database first, which
hands the lock over the moment it is released.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storyloom.errors import StoreError
from storyloom.store.inline import reused_connections
from storyloom.store.loopthread import LoopThread

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own busy wait only
    fcntl = None  # type: ignore[assignment]

__all__ = ["Transaction", "WriteThread"]

T = TypeVar("T")
Transaction = Callable[[AsyncConnection], Awaitable[T]]
_Item = tuple[Transaction[Any], "concurrent.futures.Future[Any]"]

# A thread waiting for the GIL gets it after at most this long (CPython's default is 5 ms). The
# write thread needs it several times per transaction while the loop thread is busy.
_SWITCH_INTERVAL_S = 0.001


class WriteThread:
    def __init__(
        self,
        make_engine: Callable[[], AsyncEngine],
        *,
        lock_path: str | None = None,
        max_batch_s: float = 0.01,
        listeners: list[Callable[[], None]] | None = None,
    ) -> None:
        self._make_engine = make_engine
        self._engine: AsyncEngine | None = None
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644) if lock_path and fcntl else None
        self.max_batch_s = max_batch_s
        self._listeners = listeners if listeners is not None else []  # shared: added to later
        self._queue: deque[_Item] = deque()
        self._mutex = threading.Lock()
        self._kicked = False
        self.batches = 0  # commits, for tests and metrics
        self.transactions = 0
        if sys.getswitchinterval() > _SWITCH_INTERVAL_S:
            sys.setswitchinterval(_SWITCH_INTERVAL_S)
        self._thread = LoopThread("db-writes")
        self._loop = self._thread.loop

    def submit(self, fn: Transaction[T]) -> concurrent.futures.Future[T]:
        """Queue `fn`; the future settles after the commit of the batch that ran it."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._mutex:
            self._queue.append((fn, fut))
            kick = not self._kicked
            self._kicked = True
        if kick:
            self._loop.call_soon_threadsafe(self._start_drain)
        return fut

    def _start_drain(self) -> None:
        self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self._mutex:
                if not self._queue:
                    self._kicked = False
                    return
            await self._run_batch()

    def _take(self) -> _Item | None:
        with self._mutex:
            while self._queue:
                item = self._queue.popleft()
                if item[1].set_running_or_notify_cancel():  # False: its caller gave up
                    return item
        return None

    async def _run_batch(self) -> None:
        if self._engine is None:
            self._engine = self._make_engine()
        done: list[tuple[_Item, Any]] = []
        try:
            async with reused_connections(self._engine)() as conn:
                with self._file_lock():
                    async with conn.begin():
                        started = time.monotonic()
                        while time.monotonic() - started < self.max_batch_s and (item := self._take()):
                            try:
                                done.append((item, await item[0](conn)))
                            except BaseException:
                                done.append((item, None))
                                raise
        except Exception as exc:
            if not done:  # no connection or no lock: the next caller in line gets the error
                if (item := self._take()) is not None:
                    _fail(item[1], exc)
                return
            if len(done) == 1:
                _fail(done[0][0][1], exc)
                return
            for item, _ in done:  # rolled back: each alone, for its own outcome
                await self._run_alone(item)
            return
        self.batches += 1
        self.transactions += len(done)
        self._committed()
        for (_, fut), result in done:
            fut.set_result(result)

    async def _run_alone(self, item: _Item) -> None:
        fn, fut = item
        assert self._engine is not None
        try:
            async with reused_connections(self._engine)() as conn:
                with self._file_lock():
                    async with conn.begin():
                        result = await fn(conn)
        except Exception as exc:
            _fail(fut, exc)
            return
        self.batches += 1
        self.transactions += 1
        self._committed()
        fut.set_result(result)

    def _committed(self) -> None:
        for listener in self._listeners:
            listener()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        # Blocking is right here: this loop runs nothing but this process's writes, one at a time.
        if self._lock_fd is None or fcntl is None:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Finish what is queued, dispose of the engine on its loop, stop the loop, join the thread."""

        async def finish() -> None:
            while True:
                with self._mutex:
                    if not self._queue:
                        break
                await self._run_batch()
            if self._engine is not None:
                await self._engine.dispose()

        try:
            self._thread.close(finish)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)


def _fail(fut: concurrent.futures.Future[Any], exc: Exception) -> None:
    if isinstance(exc, SQLAlchemyError | OSError):
        wrapped = StoreError(f"database write failed: {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        fut.set_exception(wrapped)
    else:
        fut.set_exception(exc)
