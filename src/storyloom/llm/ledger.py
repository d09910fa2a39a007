"""Tokens and cost of every call, summed per step, job, tenant, model and deployment; prices.

Prices come from `prices.json` (data, not code). Totals are per gateway (process); the API reads
them through the metrics. Per-job and per-step totals live only while their job runs in this
process (`forget_job`, called by the worker when a run ends, and at most `max_jobs` jobs kept):
the durable record of a job's cost is its usage rows, and a worker runs thousands of jobs a day.
Tenant budgets (`budgets_usd`) are enforced by the gateway through the
shared LimitBackend (a hold of the worst case before the call, settled to the real cost after), so
they hold across every process sharing it, not here.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from storyloom.llm.types import Usage

__all__ = ["CallRecord", "Ledger", "PriceTable", "Totals"]


class PriceTable:
    """USD per million tokens by model name: (input, output) or (input, output, cached input).

    Cached prompt tokens (served from the provider's prompt cache, part of `prompt_tokens`) cost
    the model's `cached_input` price; a model without one bills them as ordinary input."""

    def __init__(self, prices: Mapping[str, tuple[float, float] | tuple[float, float, float]]) -> None:
        self._prices = {m: (p[0], p[1], p[2] if len(p) > 2 else p[0]) for m, p in prices.items()}

    @classmethod
    def bundled(cls) -> PriceTable:
        doc: dict[str, Any] = json.loads(
            resources.files("storyloom.llm").joinpath("prices.json").read_text(encoding="utf-8")
        )
        return cls(
            {
                m: (float(p["input"]), float(p["output"]), float(p.get("cached_input", p["input"])))
                for m, p in doc["models"].items()
            }
        )

    def cost(self, usage: Usage, *models: str) -> float:
        for m in models:
            price = self._prices.get(m)
            if price is not None:
                cached = min(usage.cached_tokens, usage.prompt_tokens)
                fresh = usage.prompt_tokens - cached
                return (fresh * price[0] + cached * price[2] + usage.completion_tokens * price[1]) / 1e6
        return 0.0


@dataclass(slots=True)
class Totals:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
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
        self,
        prices: PriceTable,
        budgets_usd: dict[str, float],
        *,
        keep_calls: int = 1_000,
        max_jobs: int = 2_000,
    ) -> None:
        self.prices = prices
        self.budgets_usd = budgets_usd
        self.totals: dict[tuple[str, str], Totals] = {}
        self.calls: deque[CallRecord] = deque(maxlen=keep_calls)  # the latest calls, for debugging
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, set[str]] = OrderedDict()  # job id -> its step keys, oldest first

    def total(self, dimension: str, key: str) -> Totals:
        return self.totals.get((dimension, key)) or Totals()

    def record(self, rec: CallRecord) -> None:
        self.calls.append(rec)
        keys = [("tenant", rec.tenant), ("model", rec.model)]
        if rec.deployment:
            keys.append(("deployment", rec.deployment))
        if rec.job_id:
            keys.append(("job", rec.job_id))
            steps = self._jobs.get(rec.job_id)
            if steps is None:
                steps = self._jobs[rec.job_id] = set()
                while len(self._jobs) > self.max_jobs:
                    self.forget_job(next(iter(self._jobs)))
            if rec.step:
                step_key = f"{rec.job_id}/{rec.step}"
                steps.add(step_key)
                keys.append(("step", step_key))
        for key in keys:
            t = self.totals.get(key)
            if t is None:
                t = self.totals[key] = Totals()
            t.calls += 1
            t.prompt_tokens += rec.usage.prompt_tokens
            t.completion_tokens += rec.usage.completion_tokens
            t.cached_tokens += rec.usage.cached_tokens
            t.cost_usd += rec.cost_usd

    def forget_job(self, job_id: str) -> None:
        """Drop the job's and its steps' totals (its run in this process ended)."""
        steps = self._jobs.pop(job_id, None)
        self.totals.pop(("job", job_id), None)
        for step_key in steps or ():
            self.totals.pop(("step", step_key), None)

    @property
    def jobs_tracked(self) -> int:
        return len(self._jobs)
