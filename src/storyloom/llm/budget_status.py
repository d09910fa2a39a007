"""Is a tenant already over one of its budgets, and until when? For the API, before it accepts a job.

The gateway refuses each call that would overshoot a budget (`BudgetExceededError`); this answers
the earlier question, so a job that could not make a single call is refused at submission with a
429 and a Retry-After instead of being accepted and failed. It reads the same shared documents the
gateway's holds live in (`LimitBackend.budget_usage`), so it sees every process's spend.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import NamedTuple

from storyloom.limits.base import LimitBackend
from storyloom.limits.budgets import BudgetLimits, period_end

__all__ = ["BudgetStatus", "budget_status"]

_WHAT = {"total": "lifetime", "day": "daily", "month": "monthly"}


class BudgetStatus(NamedTuple):
    over: bool
    limit_name: str  # the limit's configuration key: budget_usd, daily_budget_usd, ... ("" if not over)
    retry_after_s: float | None  # until the period resets; None: a lifetime budget never resets
    message: str = ""  # one sentence naming the limit and when it resets ("" if not over)


async def budget_status(
    backend: LimitBackend, tenant: str, limits: BudgetLimits, now: float | None = None
) -> BudgetStatus:
    """Whether `tenant` has spent (settled, not merely held) all of any budget period.

    When several are spent, the one that resets last is reported (a lifetime budget never does), so
    the Retry-After is one after which a call can succeed again. Raises `ProviderError` (a
    `ProviderConnectionError`) when the limits store is unreachable; the caller decides whether to
    accept the job anyway."""
    at = time.time() if now is None else now
    found: BudgetStatus | None = None
    for period in ("total", "month", "day"):
        usd, tokens = limits.of(period)
        if usd is None and tokens is None:
            continue
        use = await backend.budget_usage(tenant, period, at)
        if usd is not None and use.spent_usd >= usd:
            unit, amount = "usd", f"${usd:.4f}"
        elif tokens is not None and use.spent_tokens >= tokens:
            unit, amount = "tokens", f"{tokens} tokens"
        else:
            continue
        prefix = {"total": "", "day": "daily_", "month": "monthly_"}[period]
        ends = period_end(period, at)
        retry = None if ends is None else max(0.0, ends - at)
        if ends is None:
            resets = "it does not reset"
        else:
            resets = f"it resets at {dt.datetime.fromtimestamp(ends, dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
        status = BudgetStatus(
            True,
            f"{prefix}budget_{unit}",
            retry,
            f"tenant {tenant!r} has spent its {_WHAT[period]} budget of {amount} ({prefix}budget_{unit}); "
            f"{resets}.",
        )
        if found is None or _later(status, found):
            found = status
    return found or BudgetStatus(False, "", 0.0)


def _later(a: BudgetStatus, b: BudgetStatus) -> bool:
    """Whether `a` resets later than `b` (never = latest)."""
    if b.retry_after_s is None:
        return False
    return a.retry_after_s is None or a.retry_after_s > b.retry_after_s
