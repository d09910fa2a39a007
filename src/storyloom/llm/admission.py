"""Admission: one queue per model, priority first, then weighted fair share across tenants.

Within the highest priority that has waiters, the tenant with the smallest virtual pass goes next
and its pass grows by cost ÷ weight (stride scheduling), so tenants weighted 1:2:1 get tokens
1:2:1 while all are busy, and a tenant that was idle cannot bank credit (its pass starts at the
current virtual time). The head waiter is dispatched only when the limits grant it a deployment;
a call that finds the queue empty tries the limits at once (no task hop on the fast path).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from storyloom.errors import CircuitOpenError, ProviderTimeout, RateLimitError
from storyloom.limits.state import Denied, Grant

__all__ = ["AdmissionQueue", "Admitted"]

AcquireFn = Callable[[float, int], Awaitable[Grant | Denied]]  # (cost, priority of the head)
ReleaseFn = Callable[[Grant, float], Awaitable[None]]


@dataclass(slots=True)
class _Waiter:
    tenant: str
    priority: int
    cost: float
    enqueued_at: float
    future: asyncio.Future[Grant] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Admitted:
    grant: Grant
    wait_s: float


class AdmissionQueue:
    def __init__(
        self,
        model: str,
        acquire: AcquireFn,
        abandon: ReleaseFn,
        *,
        weights: dict[str, float],
        poll_s: float,
        max_queue: int,
    ) -> None:
        self.model = model
        self._acquire = acquire
        self._abandon = abandon
        self._weights = weights
        self._poll_s = poll_s
        self._max_queue = max_queue
        self._queues: dict[int, dict[str, deque[_Waiter]]] = {}
        self._pass: dict[str, float] = {}
        self._vtime = 0.0
        self._size = 0
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return self._size

    def wake(self) -> None:
        """A slot was freed in this process: look at the head waiter again now, not at the next poll."""
        self._wake.set()

    async def admit(self, tenant: str, priority: int, cost: float, deadline_at: float | None) -> Admitted:
        """Wait for a grant. Raises CircuitOpenError when every deployment is open, ProviderTimeout
        (phase 'queue') when the deadline (time.monotonic()) passes first."""
        start = time.monotonic()
        if self._size == 0:
            decision = await self._acquire(cost, priority)
            if isinstance(decision, Grant):
                self._charge(tenant, cost)
                return Admitted(decision, time.monotonic() - start)
            if decision.reason == "open":
                raise CircuitOpenError(
                    f"every deployment of {self.model} is open", retry_after_s=decision.wait_s
                )
        if self._size >= self._max_queue:
            raise RateLimitError(f"the gateway queue of {self.model} is full", retry_after_s=1.0)
        waiter = _Waiter(tenant, priority, cost, start, asyncio.get_running_loop().create_future())
        self._push(waiter)
        try:
            if deadline_at is None:
                grant = await waiter.future
            else:
                async with asyncio.timeout_at(
                    asyncio.get_running_loop().time() + deadline_at - time.monotonic()
                ):
                    grant = await waiter.future
        except TimeoutError:
            raise ProviderTimeout(f"waited past the deadline for {self.model}", phase="queue") from None
        finally:
            if not waiter.future.done():
                waiter.future.cancel()  # the dispatcher drops it (and returns a grant it raced)
        return Admitted(grant, time.monotonic() - start)

    def _charge(self, tenant: str, cost: float) -> None:
        p = max(self._pass.get(tenant, 0.0), self._vtime)
        self._vtime = p
        self._pass[tenant] = p + max(cost, 1.0) / self._weights.get(tenant, 1.0)

    def _push(self, w: _Waiter) -> None:
        by_tenant = self._queues.setdefault(w.priority, {})
        q = by_tenant.get(w.tenant)
        if q is None:
            q = by_tenant[w.tenant] = deque()
        if not q:  # (re)joining: no banked credit from idle time
            self._pass[w.tenant] = max(self._pass.get(w.tenant, 0.0), self._vtime)
        q.append(w)
        self._size += 1
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name=f"admission:{self.model}")
        else:
            self._wake.set()

    def _head(self) -> _Waiter | None:
        """The next waiter by priority then tenant pass, dropping abandoned ones."""
        for prio in sorted(self._queues, reverse=True):
            by_tenant = self._queues[prio]
            best: deque[_Waiter] | None = None
            best_key = (0.0, 0.0)
            for tenant, q in list(by_tenant.items()):
                while q and q[0].future.done():
                    q.popleft()
                    self._size -= 1
                if not q:
                    del by_tenant[tenant]
                    continue
                key = (self._pass.get(tenant, 0.0), q[0].enqueued_at)
                if best is None or key < best_key:
                    best, best_key = q, key
            if best is not None:
                return best[0]
            del self._queues[prio]
        return None

    def _pop(self, w: _Waiter) -> None:
        q = self._queues[w.priority][w.tenant]
        q.popleft()
        self._size -= 1

    async def _dispatch(self) -> None:
        while True:
            head = self._head()
            if head is None:
                return
            self._wake.clear()
            decision = await self._acquire(head.cost, head.priority)
            if isinstance(decision, Grant):
                self._pop(head)
                if head.future.done():  # its caller left while we acquired: give the slot back
                    await self._abandon(decision, head.cost)
                    continue
                self._charge(head.tenant, head.cost)
                head.future.set_result(decision)
                continue
            if decision.reason == "open":
                self._pop(head)
                if not head.future.done():
                    head.future.set_exception(
                        CircuitOpenError(
                            f"every deployment of {self.model} is open", retry_after_s=decision.wait_s
                        )
                    )
                continue
            wait = self._poll_s if decision.wait_s is None else min(max(decision.wait_s, 0.001), 1.0)
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
