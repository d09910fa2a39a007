"""A tenant's `max_streams` across every API node: one lease per open stream in the limits store.

The stream gate (api/stream_gate.py) counts streams per process, synchronously, because it runs
on every stream's admission and orders the queue. What other nodes hold comes from here: each
stream of a tenant that has a stream limit holds a lease in the document `streams:<tenant>` of
the shared limits store (Redis in a multi-node deployment), renewed while it is open, released
when it ends, and expiring `lease_ttl_s` after a node dies without releasing. Before a stream is
admitted the route reads the tenant's document (`refresh`), so the gate sees the other nodes'
streams as they were one round trip ago: two nodes admitting the tenant's last slot at the same
instant can both win, an overshoot of at most one stream per node for that instant; anything
slower than the round trip is refused like a local stream over the limit.

The lease is taken by a task after admission rather than inside the gate, so a stream never
waits on the store to start; a store that fails is logged, and the stream is then counted on its
own node only (the same promise as without sharing, never a refused stream for a side store's
outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from storyloom.eventloop import cancel_all
from storyloom.limits.base import LimitBackend
from storyloom.limits.state import Ask, Grant, Outcome
from storyloom.logs import get_logger

__all__ = ["SharedStreams"]

_log = get_logger("storyloom.api.streams")
_NEUTRAL = Outcome("neutral")


def _doc(tenant: str) -> str:
    return f"streams:{tenant}"


class SharedStreams:
    def __init__(self, backend: LimitBackend, *, lease_ttl_s: float = 30.0) -> None:
        self.backend = backend
        self.lease_ttl_s = lease_ttl_s
        self._elsewhere: dict[str, int] = {}
        self._mine: dict[str, set[str]] = {}  # tenant -> lease ids this process holds
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    def held_here(self, tenant: str) -> int:
        """Leases this process holds for `tenant` (one per open stream, once its task ran)."""
        return len(self._mine.get(tenant, ()))

    def elsewhere(self, tenant: str) -> int:
        """Streams of `tenant` open on other nodes at the last `refresh` (the gate's callback)."""
        return self._elsewhere.get(tenant, 0)

    async def refresh(self, tenant: str) -> None:
        try:
            state = (await self.backend.snapshot([_doc(tenant)]))[_doc(tenant)]
        except Exception as exc:  # a side store's outage: count this node's streams only
            _log.warning("api.shared_streams_failed", tenant=tenant, error=type(exc).__name__)
            self._elsewhere.pop(tenant, None)
            return
        now = time.time()
        mine = self._mine.get(tenant, set())
        live = sum(1 for lease, expires in state["leases"].items() if expires > now and lease not in mine)
        if live:
            self._elsewhere[tenant] = live
        else:
            self._elsewhere.pop(tenant, None)  # no entry per tenant that ever streamed

    def hold(self, tenant: str) -> Callable[[], None]:
        """Take the tenant's lease for one stream now (in a task); the result gives it back."""
        ask = Ask(_doc(tenant), rpm=None, tpm=None, concurrency=None)
        taken: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        async def take() -> None:
            lease: str | None = None
            try:
                grant = await self.backend.acquire([ask], 0.0, self.lease_ttl_s)
                if isinstance(grant, Grant):
                    lease = grant.lease_id
                    self._mine.setdefault(tenant, set()).add(lease)
                    self._renew_soon()
            except Exception as exc:
                _log.warning("api.shared_streams_failed", tenant=tenant, error=type(exc).__name__)
            finally:
                taken.set_result(lease)

        async def give_back() -> None:
            lease = await taken
            if lease is None:
                return
            mine = self._mine.get(tenant)
            if mine is not None:
                mine.discard(lease)
                if not mine:
                    del self._mine[tenant]
            try:
                await self.backend.release(ask, lease, _NEUTRAL)
            except Exception as exc:  # it expires by itself within lease_ttl_s
                _log.warning("api.shared_streams_failed", tenant=tenant, error=type(exc).__name__)

        self._spawn(take())
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._spawn(give_back())

        return release

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _renew_soon(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while self._mine:
            await asyncio.sleep(self.lease_ttl_s / 3)
            leases = {_doc(t): sorted(ids) for t, ids in self._mine.items()}
            try:
                await self.backend.renew(leases, self.lease_ttl_s)
            except Exception as exc:
                _log.warning("api.shared_streams_failed", error=type(exc).__name__)

    async def aclose(self) -> None:
        """Give back every lease still held (a stopping node's streams end with it)."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await cancel_all([self._renewer])
        for tenant, ids in list(self._mine.items()):
            ask = Ask(_doc(tenant), rpm=None, tpm=None, concurrency=None)
            for lease in ids:
                with contextlib.suppress(Exception):
                    await self.backend.release(ask, lease, _NEUTRAL)
        self._mine.clear()
        await self.backend.aclose()
