"""`Batcher`: calls that arrive while one is being served are served together, by one call.

This is group commit for any database round trip whose cost is per call, not per row: with 500
clients at once, the API's loop pays a thread hop and the GIL several times per statement (see
`store.writes`), so one statement for 100 callers beats 100 statements. There is no timer: the
first call goes at once; callers wait only while an earlier batch is in flight, which is exactly
when batching pays. A caller that gave up (cancelled) before its batch started is left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    def __init__(
        self, serve: Callable[[list[In]], Awaitable[list[Out | Exception]]], *, max_batch: int = 500
    ) -> None:
        """`serve(items)` answers each item, in order: its result, or the exception for that caller."""
        self._serve = serve
        self.max_batch = max_batch
        self._waiting: list[tuple[In, asyncio.Future[Out]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # calls of `serve`, for tests

    async def __call__(self, item: In) -> Out:
        fut: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await fut

    async def idle(self) -> None:
        """Wait until every batch taken so far has been served (tests, shutdown)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        while self._waiting:
            batch = [w for w in self._waiting[: self.max_batch] if not w[1].done()]  # done: gave up
            del self._waiting[: self.max_batch]
            if not batch:
                continue
            try:
                outcomes = await self._serve([item for item, _ in batch])
            except Exception as exc:
                outcomes = [exc] * len(batch)
            self.batches += 1
            for (_, fut), outcome in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if isinstance(outcome, Exception):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)
