"""Tenant budgets per period: the pure rules, applied by every backend (and by limits.lua).

A tenant's budget for one period is one more document beside the deployments' (same store, same
critical section): settled USD and tokens, plus holds, each a lease (`leases`, so `renew` and
expiry work as for a deployment's concurrency) with its amounts (`holds`, `hold_tokens`). A hold
is the call's worst case; settling drops it and adds the real cost, so N processes together never
reserve past a budget, and a process that dies mid-call gives its holds back when they expire.

Periods are UTC: the lifetime (`budget:<tenant>`, what `budget_usd` always was), the day
(`budget:<tenant>:day:YYYY-MM-DD`) and the month (`budget:<tenant>:month:YYYY-MM`). A period's
document is named by its period, so a new day starts from nothing without any reset job, and it
carries `expires_at` (a day after the period ends) so Redis drops it and the other stores sweep it.
A call is held against every period that has a limit at once, atomically: it is admitted only if it
fits all of them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "PERIODS",
    "BudgetDenied",
    "BudgetHold",
    "BudgetLimits",
    "BudgetUsage",
    "Period",
    "PeriodSpec",
    "budget_key",
    "budget_reserve",
    "budget_settle",
    "budget_totals",
    "new_budget_state",
    "period_end",
    "period_specs",
]

State = dict[str, Any]
Period = Literal["total", "month", "day"]
PERIODS: tuple[Period, ...] = ("total", "month", "day")  # the order limits are checked and named in
_KEEP_AFTER_END_S = 86_400.0  # a finished period stays readable a day (late settles, reports)


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetLimits:
    """A tenant's budgets; None: no limit for that period and unit."""

    budget_usd: float | None = None  # lifetime
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None
    daily_budget_tokens: int | None = None
    monthly_budget_tokens: int | None = None

    def of(self, period: Period) -> tuple[float | None, int | None]:
        """(USD limit, token limit) of a period."""
        if period == "day":
            return self.daily_budget_usd, self.daily_budget_tokens
        if period == "month":
            return self.monthly_budget_usd, self.monthly_budget_tokens
        return self.budget_usd, None

    @property
    def any(self) -> bool:
        return any(usd is not None or tokens is not None for usd, tokens in map(self.of, PERIODS))


@dataclass(frozen=True, slots=True)
class PeriodSpec:
    """One period a call is held against, at the time of the call."""

    period: Period
    key: str  # the document's name in the store
    usd: float | None
    tokens: int | None
    ends_at: float | None  # None: the lifetime budget never resets
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class BudgetHold:
    """A granted hold: its id and the documents it is held in (settle the same ones)."""

    hold_id: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    spent_usd: float = 0.0
    held_usd: float = 0.0
    spent_tokens: int = 0
    held_tokens: int = 0


@dataclass(frozen=True, slots=True)
class BudgetDenied:
    """The first period (in PERIODS order) the call would overshoot, and how it stands."""

    spec: PeriodSpec
    unit: Literal["usd", "tokens"]
    usage: BudgetUsage

    @property
    def limit_name(self) -> str:
        """The configuration key of the limit: budget_usd, daily_budget_usd, monthly_budget_tokens..."""
        prefix = {"total": "", "day": "daily_", "month": "monthly_"}[self.spec.period]
        return f"{prefix}budget_{self.unit}"


def budget_key(tenant: str, period: Period = "total", now: float = 0.0) -> str:
    """The document name of a tenant's budget for the period that contains `now` (UTC)."""
    if period == "total":
        return f"budget:{tenant}"
    day = dt.datetime.fromtimestamp(now, dt.UTC)
    return f"budget:{tenant}:day:{day:%Y-%m-%d}" if period == "day" else f"budget:{tenant}:month:{day:%Y-%m}"


def period_end(period: Period, now: float) -> float | None:
    """When the period containing `now` ends (the next UTC midnight, the next 1st), None for lifetime."""
    if period == "total":
        return None
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return (day + dt.timedelta(days=1)).timestamp()
    first = day.replace(day=1)
    nxt = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return nxt.timestamp()


def period_specs(tenant: str, limits: BudgetLimits, now: float) -> list[PeriodSpec]:
    """The periods with a limit, in PERIODS order, as they are at `now`."""
    specs = []
    for period in PERIODS:
        usd, tokens = limits.of(period)
        if usd is None and tokens is None:
            continue
        ends = period_end(period, now)
        specs.append(
            PeriodSpec(
                period,
                budget_key(tenant, period, now),
                usd,
                tokens,
                ends,
                None if ends is None else ends + _KEEP_AFTER_END_S,
            )
        )
    return specs


def new_budget_state() -> State:
    return {"spent": 0.0, "spent_tokens": 0, "leases": {}, "holds": {}, "hold_tokens": {}, "expires_at": None}


def _prune_holds(state: State, now: float) -> None:
    state.setdefault("spent", 0.0)
    state.setdefault("spent_tokens", 0)
    state.setdefault("expires_at", None)
    leases = state.setdefault("leases", {})
    holds = state.setdefault("holds", {})
    tokens = state.setdefault("hold_tokens", {})
    for hid in [hid for hid, exp in leases.items() if exp <= now]:
        del leases[hid]
    for table in (holds, tokens):
        for hid in [hid for hid in table if hid not in leases]:
            del table[hid]


def budget_totals(state: State, now: float) -> BudgetUsage:
    """What is settled and what calls in flight hold, in USD and tokens."""
    _prune_holds(state, now)
    return BudgetUsage(
        float(state["spent"]),
        float(sum(state["holds"].values())),
        int(state["spent_tokens"]),
        int(sum(state["hold_tokens"].values())),
    )


def budget_reserve(
    states: list[State],
    specs: list[PeriodSpec],
    amount_usd: float,
    amount_tokens: int,
    hold_id: str,
    ttl_s: float,
    now: float,
) -> tuple[int, BudgetUsage]:
    """Hold the amounts in every period if each stays within its limits: (-1, -) when granted, else
    (index of the first period that would be overshot, its usage); nothing is held then."""
    for i, (st, spec) in enumerate(zip(states, specs, strict=True)):
        if st.get("expires_at") is None and spec.expires_at is not None:
            st["expires_at"] = spec.expires_at
        use = budget_totals(st, now)
        if spec.usd is not None and use.spent_usd + use.held_usd + amount_usd > spec.usd:
            return i, use
        if spec.tokens is not None and use.spent_tokens + use.held_tokens + amount_tokens > spec.tokens:
            return i, use
    for st in states:
        st["leases"][hold_id] = now + ttl_s
        st["holds"][hold_id] = amount_usd
        st["hold_tokens"][hold_id] = amount_tokens
    return -1, BudgetUsage()


def budget_settle(state: State, hold_id: str, actual_usd: float, actual_tokens: int, now: float) -> None:
    """Drop the hold (the refund of the worst case) and count the real cost (0: the call failed)."""
    _prune_holds(state, now)
    state["leases"].pop(hold_id, None)
    state["holds"].pop(hold_id, None)
    state["hold_tokens"].pop(hold_id, None)
    state["spent"] = float(state["spent"]) + actual_usd
    state["spent_tokens"] = int(state["spent_tokens"]) + actual_tokens
