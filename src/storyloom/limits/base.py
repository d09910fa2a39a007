"""Where the shared deployment state lives: a small base class and `from_url`.

Public template methods take care of lease ids and the clock; backends implement three private
hooks that apply the rules of `state.py` atomically. `memory://` is one process (no I/O on the hot
path), `sqlite:///path` every process on one machine (no server), `redis://...` every machine.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from abc import ABC, abstractmethod

from storyloom.errors import ConfigError
from storyloom.limits.state import (
    Ask,
    BreakerPolicy,
    Claim,
    Denied,
    Grant,
    Outcome,
    State,
    budget_key,
)

__all__ = ["LimitBackend"]


class LimitBackend(ABC):
    """Concurrency leases, RPM/TPM buckets and breaker state per deployment, and tenant budget holds,
    shared per its scope."""

    #: A poll interval for waiters when a slot may be freed by another process.
    poll_s: float = 0.02

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy

    @staticmethod
    def from_url(url: str, policy: BreakerPolicy | None = None) -> LimitBackend:
        """`memory://`, `sqlite:///abs/path.db` or `redis://host:port/db`; imports the backend lazily."""
        policy = policy or BreakerPolicy()
        if url.startswith("memory:"):
            from storyloom.limits.memory import MemoryBackend

            return MemoryBackend(policy)
        if url.startswith("sqlite:"):
            from storyloom.limits.sqlite import SqliteBackend

            return SqliteBackend(url.removeprefix("sqlite:///").removeprefix("sqlite://"), policy)
        if url.startswith(("redis:", "rediss:", "unix:")):
            from storyloom.limits.redis import RedisBackend

            return RedisBackend(url, policy)
        raise ConfigError(f"unknown limits backend URL {url!r}: use memory://, sqlite:///path or redis://...")

    async def acquire(
        self, asks: list[Ask], cost: float, lease_ttl_s: float, claim: Claim | None = None
    ) -> Grant | Denied:
        """One lease + one request + `cost` tokens on the least-loaded eligible deployment, or why not.

        `claim` names the waiting queue head this is for, so heads of all processes take turns."""
        # The holder's pid in the lease id lets an operator (and the bench) tell whose lease it is.
        lease_id = f"{os.getpid():x}.{uuid.uuid4().hex[:16]}"
        return await self._acquire(asks, cost, lease_id, lease_ttl_s, time.time(), claim)

    async def release(self, ask: Ask, lease_id: str, outcome: Outcome) -> None:
        await self._release(ask, lease_id, outcome, random.random(), time.time())

    async def renew(self, leases: dict[str, list[str]], lease_ttl_s: float) -> None:
        """Extend the leases still held (deployment -> lease ids), so long calls keep their slot."""
        if leases:
            await self._renew(leases, lease_ttl_s, time.time())

    async def snapshot(self, names: list[str]) -> dict[str, State]:
        """A copy of the state of each deployment (for metrics and tests)."""
        return await self._snapshot(names)

    async def reserve_budget(
        self, tenant: str, budget_usd: float, amount_usd: float, hold_ttl_s: float
    ) -> tuple[str | None, float, float]:
        """Hold `amount_usd` of the tenant's budget, atomically against everything settled and held
        by every process sharing this backend: (hold id or None if it would not fit, spent, held).

        The hold is a lease: renew it with `renew({budget_key(tenant): [hold_id]}, ttl)`."""
        hold_id = f"{os.getpid():x}.{uuid.uuid4().hex[:16]}"
        ok, spent, held = await self._reserve_budget(
            budget_key(tenant), budget_usd, amount_usd, hold_id, hold_ttl_s, time.time()
        )
        return (hold_id if ok else None), spent, held

    async def settle_budget(self, tenant: str, hold_id: str, actual_usd: float) -> None:
        """Replace the hold by the real cost (0.0 releases it: the call failed without usage)."""
        await self._settle_budget(budget_key(tenant), hold_id, actual_usd, time.time())

    async def budget_usage(self, tenant: str) -> tuple[float, float]:
        """(settled USD, USD held by calls in flight) of the tenant, across all processes."""
        return await self._budget_usage(budget_key(tenant), time.time())

    async def aclose(self) -> None:
        return None

    @abstractmethod
    async def _reserve_budget(
        self, key: str, budget_usd: float, amount_usd: float, hold_id: str, ttl_s: float, now: float
    ) -> tuple[bool, float, float]: ...

    @abstractmethod
    async def _settle_budget(self, key: str, hold_id: str, actual_usd: float, now: float) -> None: ...

    @abstractmethod
    async def _budget_usage(self, key: str, now: float) -> tuple[float, float]: ...

    @abstractmethod
    async def _acquire(
        self, asks: list[Ask], cost: float, lease_id: str, lease_ttl_s: float, now: float, claim: Claim | None
    ) -> Grant | Denied: ...

    @abstractmethod
    async def _release(
        self, ask: Ask, lease_id: str, outcome: Outcome, jitter: float, now: float
    ) -> None: ...

    @abstractmethod
    async def _renew(self, leases: dict[str, list[str]], lease_ttl_s: float, now: float) -> None: ...

    @abstractmethod
    async def _snapshot(self, names: list[str]) -> dict[str, State]: ...
