"""Limits for one process: the rules applied to dicts, no I/O, a few microseconds per acquire."""

from __future__ import annotations

import copy

from storyloom.limits import budgets
from storyloom.limits import state as rules
from storyloom.limits.base import LimitBackend
from storyloom.limits.budgets import BudgetUsage, PeriodSpec
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
        return rules.acquire(states, asks, cost, lease_id, lease_ttl_s, now, claim, self.policy)

    async def _release(self, ask: Ask, lease_id: str, outcome: Outcome, jitter: float, now: float) -> None:
        rules.release(self._state(ask.name), ask, lease_id, outcome, self.policy, jitter, now)

    async def _renew(self, leases: dict[str, list[str]], lease_ttl_s: float, now: float) -> None:
        for name, ids in leases.items():
            rules.renew(self._state(name), ids, lease_ttl_s, now)

    def _budget(self, key: str, now: float) -> State:
        st = self._states.get(key)
        if st is None:
            self._sweep(now)  # a new period (or tenant): drop the documents of periods long over
            st = self._states[key] = budgets.new_budget_state()
        return st

    def _sweep(self, now: float) -> None:
        for key in [k for k, st in self._states.items() if (st.get("expires_at") or now + 1) <= now]:
            del self._states[key]

    async def _reserve_budget(
        self,
        specs: list[PeriodSpec],
        amount_usd: float,
        amount_tokens: int,
        hold_id: str,
        ttl_s: float,
        now: float,
    ) -> tuple[int, BudgetUsage]:
        states = [self._budget(s.key, now) for s in specs]
        return budgets.budget_reserve(states, specs, amount_usd, amount_tokens, hold_id, ttl_s, now)

    async def _settle_budget(
        self, keys: list[str], hold_id: str, actual_usd: float, actual_tokens: int, now: float
    ) -> None:
        for key in keys:
            doc = self._states.get(key)
            if doc is not None:  # None: a period long over, already swept; its late cost is moot
                budgets.budget_settle(doc, hold_id, actual_usd, actual_tokens, now)

    async def _budget_usage(self, key: str, now: float) -> BudgetUsage:
        st = self._states.get(key)
        return BudgetUsage() if st is None else budgets.budget_totals(st, now)

    async def _snapshot(self, names: list[str]) -> dict[str, State]:
        return {n: copy.deepcopy(self._state(n)) for n in names}
