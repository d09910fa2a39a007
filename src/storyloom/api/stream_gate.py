"""The SSE limiter (seed 003): at most N open streams per API process and per tenant, and a queue.

A stream that finds no free slot gets a queue token, its place and an estimated wait instead of
a flat refusal: as JSON (429, `Retry-After`; the client comes back with `?queue_token=`), or, for a
client that asked for `text/event-stream` only (a browser's EventSource), as a `queued` event on a
stream that waits for its turn and then carries the job's events (the `retry:` field tells an
EventSource that loses the connection meanwhile when to come back). Turns come in order: a slot
freed goes to the oldest ticket that may use it (a ticket waiting for its own tenant's slot does
not hold up another tenant's), and a newcomer never overtakes a live ticket.

The gate is per process, like the slots it hands out: N API processes behind nginx serve N times
`max_streams` streams. A tenant's own `max_streams` holds across nodes when the limits store is
shared: `elsewhere(tenant)` says how many it holds on the others (api/shared_streams.py). A
ticket whose holder does not come back within `ticket_ttl_s` of the wait it was told is dropped,
so a client that gave up does not hold a place.

Heartbeats stretch with load (seed 003's 15 s, 20 s, 30 s): `heartbeat_s` of the base interval
below 60% occupancy (open streams over the process limit, or the 1-minute load average per core,
whichever is higher), 4/3 of it up to 90%, twice it beyond: fewer comments when the process has
least to spare.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from storyloom.errors import TenantLimitError

__all__ = ["Admitted", "StreamGate", "StreamQueuedError", "Ticket"]

_MIN_WAIT_S = 1.0
_DEFAULT_STREAM_S = 30.0  # what a stream lasts, before any has ended here to measure it


class StreamQueuedError(TenantLimitError):
    """No stream slot now: the caller holds `token` at `position` (1 = next) for about `wait_s`."""

    def __init__(self, message: str, *, limit: str, token: str, position: int, wait_s: float) -> None:
        super().__init__(message, limit=limit, retry_after_s=wait_s)
        self.token = token
        self.position = position
        self.wait_s = wait_s


@dataclass(slots=True)
class Ticket:
    token: str
    tenant: str
    created: float
    expires: float
    limit: str = "max_streams"  # what it waits for: the process's or the tenant's limit


@dataclass(slots=True)
class Admitted:
    """A slot; `release()` gives it back (once, however often it is called)."""

    release: Callable[[], None]
    waited_s: float = 0.0


@dataclass(slots=True)
class _Load:
    at: float = 0.0
    per_core: float = 0.0
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)


class StreamGate:
    def __init__(
        self,
        *,
        max_streams: int | None,
        tenant_limit: Callable[[str], int | None],
        ticket_ttl_s: float = 30.0,
        max_queue: int = 10_000,
        load_per_core: Callable[[], float] | None = None,
        elsewhere: Callable[[str], int] | None = None,
    ) -> None:
        self.max_streams = max_streams
        self.tenant_limit = tenant_limit
        self.elsewhere = elsewhere
        self.ticket_ttl_s = ticket_ttl_s
        self.max_queue = max_queue
        self.open_total = 0
        self._open: dict[str, int] = {}
        self._tickets: OrderedDict[str, Ticket] = OrderedDict()
        self.version = 0  # bumped at every change a waiting stream may care about
        self._waiter: asyncio.Future[None] | None = None
        self._mean_stream_s = _DEFAULT_STREAM_S
        self._load = _Load()
        self._load_per_core = load_per_core or self._loadavg_per_core

    # ---- figures -------------------------------------------------------------------------------
    def open_streams(self, tenant: str) -> int:
        return self._open.get(tenant, 0)

    def _held(self, tenant: str) -> int:
        """The tenant's open streams here and, with a shared store, on the other nodes."""
        here = self._open.get(tenant, 0)
        return here + self.elsewhere(tenant) if self.elsewhere is not None else here

    @property
    def queued(self) -> int:
        return len(self._tickets)

    def occupancy(self) -> float:
        """0..1+: the higher of stream occupancy and CPU load per core."""
        streams = self.open_total / self.max_streams if self.max_streams else 0.0
        return max(streams, self._load_per_core())

    def _loadavg_per_core(self) -> float:
        now = time.monotonic()
        if now - self._load.at > 1.0:  # read at most once a second, however many streams ask
            self._load.at = now
            try:
                self._load.per_core = os.getloadavg()[0] / self._load.cores
            except OSError:
                self._load.per_core = 0.0
        return self._load.per_core

    def heartbeat_s(self, base_s: float) -> float:
        """Seed 003's stretch: 15 s -> 20 s -> 30 s as the process gets busier."""
        load = self.occupancy()
        if load >= 0.9:
            return base_s * 2.0
        if load >= 0.6:
            return base_s * 4.0 / 3.0
        return base_s

    # ---- admission -----------------------------------------------------------------------------
    def enter(self, tenant: str, token: str | None = None, *, queue: bool = True) -> Admitted:
        """A slot now, or StreamQueuedError (a TenantLimitError: 429) with the caller's ticket.

        `queue` False: a plain TenantLimitError and no ticket (a route that cannot come back with
        a token); it still never overtakes the tickets already waiting."""
        now = time.monotonic()
        self._expire(now)
        ticket = self._tickets.get(token) if token else None
        if ticket is not None and ticket.tenant != tenant:
            ticket = None  # another tenant's token is no place in this queue
        blocked = self._blocked(tenant, ticket)
        if blocked is None:
            if ticket is not None:
                del self._tickets[ticket.token]
                self._notify()  # those behind it move up
            return Admitted(self._take(tenant), waited_s=now - ticket.created if ticket else 0.0)
        if ticket is None and not queue:
            raise TenantLimitError(
                self._refusal(tenant, blocked),
                limit=blocked,
                retry_after_s=self._estimate(len(self._tickets) + 1, blocked, tenant),
            )
        if ticket is None:
            if len(self._tickets) >= self.max_queue:
                raise TenantLimitError(
                    f"{self.open_total} event streams are open and {len(self._tickets)} wait; "
                    "try again later.",
                    limit="max_streams",
                    retry_after_s=self._mean_stream_s,
                )
            ticket = Ticket(secrets.token_urlsafe(12), tenant, now, now)
            self._tickets[ticket.token] = ticket
        ticket.limit = blocked
        position = self._position(ticket)
        wait = self._estimate(position, blocked, tenant)
        ticket.expires = now + wait + self.ticket_ttl_s  # told to come back in `wait`: some slack
        raise StreamQueuedError(
            self._sentence(tenant, blocked, position, wait),
            limit=blocked,
            token=ticket.token,
            position=position,
            wait_s=wait,
        )

    async def changed(self, since: int, timeout_s: float) -> None:
        """Return once anything changed after `version` was `since` (a slot given back, a ticket
        gone), or after `timeout_s`."""
        if self.version != since:
            return
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._waiter)

    def _notify(self) -> None:
        self.version += 1
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    def leave(self, token: str) -> None:
        """A queued client gave up: its place goes to those behind it."""
        if self._tickets.pop(token, None) is not None:
            self._notify()

    def position(self, token: str) -> int | None:
        ticket = self._tickets.get(token)
        return None if ticket is None else self._position(ticket)

    # ---- internals -----------------------------------------------------------------------------
    def _blocked(self, tenant: str, ticket: Ticket | None) -> str | None:
        """Which limit keeps `tenant` out once the live tickets ahead of it have their turns."""
        total = self.open_total
        held: dict[str, int] = {}
        for other in self._tickets.values():
            if other is ticket:
                break
            mine = held.get(other.tenant, self._held(other.tenant))
            limit = self.tenant_limit(other.tenant)
            if (self.max_streams is None or total < self.max_streams) and (limit is None or mine < limit):
                total += 1  # its turn comes first: this slot is as good as taken
                held[other.tenant] = mine + 1
        if self.max_streams is not None and total >= self.max_streams:
            return "max_streams_per_process"
        limit = self.tenant_limit(tenant)
        if limit is not None and held.get(tenant, self._held(tenant)) >= limit:
            return "max_streams"
        return None

    def _take(self, tenant: str) -> Callable[[], None]:
        self.open_total += 1
        self._open[tenant] = self._open.get(tenant, 0) + 1
        opened = time.monotonic()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open_total -= 1
            left = self._open.get(tenant, 1) - 1
            if left > 0:
                self._open[tenant] = left
            else:
                self._open.pop(tenant, None)  # no entry per tenant that ever streamed
            lasted = time.monotonic() - opened
            self._mean_stream_s = 0.9 * self._mean_stream_s + 0.1 * lasted
            self._notify()

        return release

    def _expire(self, now: float) -> None:
        stale = [t for t, ticket in self._tickets.items() if ticket.expires < now]
        for token in stale:
            del self._tickets[token]
        if stale:
            self._notify()

    def _position(self, ticket: Ticket) -> int:
        ahead = 0
        for other in self._tickets.values():
            if other is ticket:
                return ahead + 1
            if ticket.limit != "max_streams" or other.tenant == ticket.tenant:
                ahead += 1  # a tenant-limited ticket waits only behind its own tenant's
        return ahead + 1

    def _estimate(self, position: int, blocked: str, tenant: str) -> float:
        """Streams end at about one per mean-lifetime / slots: the wait for `position` turns."""
        if blocked == "max_streams":
            slots = max(1, self.tenant_limit(tenant) or 1)
        else:
            slots = max(1, self.max_streams or 1)
        return max(_MIN_WAIT_S, round(self._mean_stream_s * position / slots, 1))

    def _sentence(self, tenant: str, blocked: str, position: int, wait: float) -> str:
        return (
            f"{self._what(tenant, blocked)}; you are number {position} in the queue, about {wait:g} s: "
            "come back with your queue_token, or close another stream first."
        )

    def _refusal(self, tenant: str, blocked: str) -> str:
        return f"{self._what(tenant, blocked)}; close one first."

    def _what(self, tenant: str, blocked: str) -> str:
        if blocked == "max_streams":
            away = self.elsewhere(tenant) if self.elsewhere is not None else 0
            where = f" ({away} of them on other API nodes)" if away else ""
            return (
                f"tenant {tenant!r} has {self._held(tenant)} event streams open{where}, its limit "
                f"(max_streams {self.tenant_limit(tenant)})"
            )
        return f"this API process has {self.open_total} event streams open (max {self.max_streams})"
