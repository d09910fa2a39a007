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
from storyloom.limits.budgets import (
    BudgetDenied,
    BudgetHold,
    BudgetLimits,
    BudgetUsage,
    Period,
    PeriodSpec,
    budget_key,
    period_specs,
)
from storyloom.limits.state import Ask, BreakerPolicy, Claim, Denied, Grant, Outcome, State

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
        self,
        tenant: str,
        limits: BudgetLimits,
        amount_usd: float,
        amount_tokens: int,
        hold_ttl_s: float,
        *,
        now: float | None = None,
    ) -> BudgetHold | BudgetDenied:
        """Hold the call's worst case against every budget period of the tenant that has a limit
        (lifetime, this UTC month, this UTC day), atomically against everything settled and held by
        every process sharing this backend; nothing is held when any period would be overshot.

        The hold is a lease in each period's document: renew it with
        `renew({key: [hold.hold_id] for key in hold.keys}, ttl)`. `now` picks the periods (the
        day and month containing it; default: the present), not the holds' clock."""
        specs = period_specs(tenant, limits, time.time() if now is None else now)
        hold_id = f"{os.getpid():x}.{uuid.uuid4().hex[:16]}"
        if not specs:
            return BudgetHold(hold_id, ())
        index, usage = await self._reserve_budget(
            specs, amount_usd, amount_tokens, hold_id, hold_ttl_s, time.time()
        )
        if index < 0:
            return BudgetHold(hold_id, tuple(s.key for s in specs))
        spec = specs[index]
        over_usd = spec.usd is not None and usage.spent_usd + usage.held_usd + amount_usd > spec.usd
        return BudgetDenied(spec, "usd" if over_usd else "tokens", usage)

    async def settle_budget(self, hold: BudgetHold, actual_usd: float, actual_tokens: int = 0) -> None:
        """Replace the hold by the real cost in each of its periods (0 releases it: no usage)."""
        if hold.keys:
            await self._settle_budget(list(hold.keys), hold.hold_id, actual_usd, actual_tokens, time.time())

    async def budget_usage(
        self, tenant: str, period: Period = "total", now: float | None = None
    ) -> BudgetUsage:
        """Settled and held USD and tokens of the tenant in the period containing `now`, all processes."""
        at = time.time() if now is None else now
        return await self._budget_usage(budget_key(tenant, period, at), time.time())

    async def aclose(self) -> None:
        return None

    @abstractmethod
    async def _reserve_budget(
        self,
        specs: list[PeriodSpec],
        amount_usd: float,
        amount_tokens: int,
        hold_id: str,
        ttl_s: float,
        now: float,
    ) -> tuple[int, BudgetUsage]: ...

    @abstractmethod
    async def _settle_budget(
        self, keys: list[str], hold_id: str, actual_usd: float, actual_tokens: int, now: float
    ) -> None: ...

    @abstractmethod
    async def _budget_usage(self, key: str, now: float) -> BudgetUsage: ...

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
