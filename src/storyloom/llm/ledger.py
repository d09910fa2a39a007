"""Tokens and cost of every call, summed per step, job, tenant, model and deployment; tenant budgets.

Prices come from `prices.json` (data, not code). A budget is reserved before the call with the
call's worst-case cost (prompt + max output) and settled to the real cost after it, so concurrent
first calls of a tenant cannot all pass a check that each of them alone would pass (LiteLLM #40095).
Budgets and totals are per gateway (process); the API reads them through the metrics.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import Any

from storyloom.errors import BudgetExceededError
from storyloom.llm.types import Usage

__all__ = ["CallRecord", "Ledger", "PriceTable", "Totals"]


class PriceTable:
    """USD per million tokens by model name."""

    def __init__(self, prices: dict[str, tuple[float, float]]) -> None:
        self._prices = prices

    @classmethod
    def bundled(cls) -> PriceTable:
        doc: dict[str, Any] = json.loads(
            resources.files("storyloom.llm").joinpath("prices.json").read_text(encoding="utf-8")
        )
        return cls({m: (float(p["input"]), float(p["output"])) for m, p in doc["models"].items()})

    def cost(self, usage: Usage, *models: str) -> float:
        for m in models:
            price = self._prices.get(m)
            if price is not None:
                return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1e6
        return 0.0


@dataclass(slots=True)
class Totals:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class CallRecord:
    tenant: str
    job_id: str | None
    step: str | None
    model: str
    deployment: str | None
    usage: Usage
    cost_usd: float
    cached: bool


class Ledger:
    def __init__(
        self, prices: PriceTable, budgets_usd: dict[str, float], *, keep_calls: int = 10_000
    ) -> None:
        self.prices = prices
        self.budgets_usd = budgets_usd
        self.totals: dict[tuple[str, str], Totals] = {}
        self.calls: deque[CallRecord] = deque(maxlen=keep_calls)
        self._reserved: dict[str, float] = {}

    def reserve(self, tenant: str, amount_usd: float) -> float:
        """Hold `amount_usd` of the tenant's budget or raise BudgetExceededError; returns the hold."""
        budget = self.budgets_usd.get(tenant)
        if budget is None:
            return 0.0
        spent = self.total("tenant", tenant).cost_usd
        held = self._reserved.get(tenant, 0.0)
        if spent + held + amount_usd > budget:
            raise BudgetExceededError(
                f"tenant {tenant!r} budget ${budget:.4f} would be exceeded "
                f"(spent ${spent:.4f}, in flight ${held:.4f}, this call up to ${amount_usd:.4f})"
            )
        self._reserved[tenant] = held + amount_usd
        return amount_usd

    def unreserve(self, tenant: str, hold_usd: float) -> None:
        if hold_usd:
            self._reserved[tenant] = max(0.0, self._reserved.get(tenant, 0.0) - hold_usd)

    def total(self, dimension: str, key: str) -> Totals:
        return self.totals.get((dimension, key)) or Totals()

    def record(self, rec: CallRecord) -> None:
        self.calls.append(rec)
        keys = [("tenant", rec.tenant), ("model", rec.model)]
        if rec.deployment:
            keys.append(("deployment", rec.deployment))
        if rec.job_id:
            keys.append(("job", rec.job_id))
            if rec.step:
                keys.append(("step", f"{rec.job_id}/{rec.step}"))
        for key in keys:
            t = self.totals.get(key)
            if t is None:
                t = self.totals[key] = Totals()
            t.calls += 1
            t.prompt_tokens += rec.usage.prompt_tokens
            t.completion_tokens += rec.usage.completion_tokens
            t.cost_usd += rec.cost_usd
