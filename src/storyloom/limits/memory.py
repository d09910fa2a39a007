"""Limits for one process: the rules applied to dicts, no I/O, a few microseconds per acquire."""

from __future__ import annotations

import copy

from storyloom.limits import state as rules
from storyloom.limits.base import LimitBackend
from storyloom.limits.state import Ask, BreakerPolicy, Claim, Denied, Grant, Outcome, State

__all__ = ["MemoryBackend"]


class MemoryBackend(LimitBackend):
    """Single event loop, so each hook is atomic by construction (no await inside)."""

    poll_s = 0.25  # releases in this process wake waiters directly; polling only catches expiries

    def __init__(self, policy: BreakerPolicy) -> None:
        super().__init__(policy)
        self._states: dict[str, State] = {}

    def _state(self, name: str) -> State:
        st = self._states.get(name)
        if st is None:
            st = self._states[name] = rules.new_state()
        return st

    async def _acquire(
        self, asks: list[Ask], cost: float, lease_id: str, lease_ttl_s: float, now: float, claim: Claim | None
    ) -> Grant | Denied:
        states = {a.name: self._state(a.name) for a in asks}
        return rules.acquire(states, asks, cost, lease_id, lease_ttl_s, now, claim)

    async def _release(self, ask: Ask, lease_id: str, outcome: Outcome, jitter: float, now: float) -> None:
        rules.release(self._state(ask.name), ask, lease_id, outcome, self.policy, jitter, now)

    async def _renew(self, leases: dict[str, list[str]], lease_ttl_s: float, now: float) -> None:
        for name, ids in leases.items():
            rules.renew(self._state(name), ids, lease_ttl_s, now)

    def _budget(self, key: str) -> State:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = rules.new_budget_state()
        return st

    async def _reserve_budget(
        self, key: str, budget_usd: float, amount_usd: float, hold_id: str, ttl_s: float, now: float
    ) -> tuple[bool, float, float]:
        return rules.budget_reserve(self._budget(key), budget_usd, amount_usd, hold_id, ttl_s, now)

    async def _settle_budget(self, key: str, hold_id: str, actual_usd: float, now: float) -> None:
        rules.budget_settle(self._budget(key), hold_id, actual_usd, now)

    async def _budget_usage(self, key: str, now: float) -> tuple[float, float]:
        return rules.budget_totals(self._budget(key), now)

    async def _snapshot(self, names: list[str]) -> dict[str, State]:
        return {n: copy.deepcopy(self._state(n)) for n in names}
