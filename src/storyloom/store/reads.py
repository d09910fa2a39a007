"""`ReadThread`: latency-critical SQLite reads on a thread and loop of their own.

Why: through aiosqlite, every step of a read (check out, execute, fetch, reset) is a hand-over from
the connection's thread back to the caller's loop, and each hand-over waits for that loop's whole
queue of ready callbacks. When 500 streams open at once the API's loop has hundreds of them, and
the event hub's batched read of 500 jobs, 4-8 ms alone, took 40-80 ms there. Run on this thread's
idle loop, the same steps cost microseconds each, and the caller's loop is handed the result once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from storyloom.store.loopthread import LoopThread
from storyloom.store.writes import Transaction

__all__ = ["ReadThread"]

T = TypeVar("T")


class ReadThread:
    def __init__(self, make_engine: Callable[[], AsyncEngine]) -> None:
        self._make_engine = make_engine
        self._engine: AsyncEngine | None = None  # made on this thread's loop, which its connections need
        self._thread = LoopThread("db-reads")

    def submit(self, fn: Transaction[T]) -> concurrent.futures.Future[T]:
        """Run `fn(conn)` there; cancelling the future cancels the read."""
        return asyncio.run_coroutine_threadsafe(self._run(fn), self._thread.loop)

    async def _run(self, fn: Transaction[T]) -> T:
        if self._engine is None:
            self._engine = self._make_engine()
        async with self._engine.connect() as conn:
            return await fn(conn)

    def close(self) -> None:
        async def finish() -> None:
            if self._engine is not None:
                await self._engine.dispose()

        self._thread.close(finish)
