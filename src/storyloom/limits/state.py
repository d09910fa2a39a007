"""The shared state of deployments and the pure rules that change it.

Every backend (in-process, SQLite file, Redis) applies exactly these rules inside its own critical
section (a lock, an IMMEDIATE transaction, a Lua script); the state of one deployment is a small
JSON-able dict so it can be stored as one row / one key. `now` is wall-clock seconds (`time.time()`)
because several processes, and after a restart a new boot, must agree on it.

Rate limits are token buckets (refilled continuously: no fixed-window boundary burst). A bucket of
rate r/s and capacity C admits at most C + r*W in any window W; with C = headroom * quota and
r = (quota - C) / W that is at most the quota in every window W (60 s), which is the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CLAIM_TTL_S",
    "Ask",
    "BreakerPolicy",
    "Claim",
    "Denied",
    "Grant",
    "Outcome",
    "acquire",
    "breaker_state",
    "budget_key",
    "budget_reserve",
    "budget_settle",
    "budget_totals",
    "in_flight",
    "new_budget_state",
    "new_state",
    "release",
    "renew",
]

State = dict[str, Any]
OutcomeKind = Literal["ok", "fail", "rate_limited", "neutral"]


@dataclass(frozen=True, slots=True)
class Ask:
    """One deployment a call may go to, with its limits as this process sees them now."""

    name: str
    rpm: int | None
    tpm: int | None
    concurrency: int | None  # the adaptive limit (never above the configured maximum)
    weight: float = 1.0
    headroom: float = 0.03
    window_s: float = 60.0  # the quota is per this window (providers: 60 s; scaled-down benches less)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Seed 001: open after `min_failures` failures within `window_s` (and at least `failure_rate` of
    the calls there), stay open a jittered `open_s` (never less than Retry-After), then one probe."""

    min_failures: int = 5
    failure_rate: float = 0.5
    window_s: float = 60.0
    open_s: float = 15.0
    max_open_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Claim:
    """A waiting queue head (one per process and model): `priority` 0..9.

    A denied claim is remembered by each deployment it asked (for CLAIM_TTL_S, refreshed by every
    retry); later acquires of lower priority, or of the same priority but claimed later, must leave
    room for it. This orders queue heads of all processes by priority, then first-come, so one
    process's small requests cannot starve another's large or urgent ones."""

    id: str
    priority: int


CLAIM_TTL_S = 2.0


@dataclass(frozen=True, slots=True)
class Grant:
    deployment: str
    lease_id: str
    probe: bool


@dataclass(frozen=True, slots=True)
class Denied:
    """Nothing can be granted now; `wait_s` None means 'until a slot is released' (poll)."""

    wait_s: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended, for the breaker, the 429 pause and the TPM settle."""

    kind: OutcomeKind
    reserved_tokens: int = 0
    actual_tokens: int | None = None  # None: keep the reservation (the provider charged it)
    retry_after_s: float | None = None


_JITTER_S = 1.0  # measured: 0.25 s was overrun on 2 busy cores (bench gateway, 5 processes)
_SLOTS = 6  # the breaker window in 6 slots: a sliding window to within window_s/6


def new_state() -> State:
    return {
        "rpm": [None, 0.0],  # [level or None (= full), updated_at]
        "tpm": [None, 0.0],
        "leases": {},  # lease_id -> expires_at
        "blocked_until": 0.0,
        "claims": {},  # claim id -> [priority, cost, since, expires_at]
        "br": {"state": "closed", "slots": [], "open_until": 0.0, "probe": None, "trips": 0},
    }


def _rate(quota: int, headroom: float, window_s: float) -> tuple[float, float]:
    """(refill per second, capacity) of a bucket for `quota` per `window_s`.

    The refill is spread over window_s + _JITTER_S: the provider stamps admissions when requests
    arrive, up to that much later relative to each other than our grants (connection set-up, a busy
    loop), which would otherwise squeeze one more request into the provider's window."""
    cap = max(1.0, headroom * quota)
    return (quota - cap) / (window_s + _JITTER_S), cap


def _level(bucket: list[Any], quota: int, headroom: float, window_s: float, now: float) -> float:
    rate, cap = _rate(quota, headroom, window_s)
    level, at = bucket
    if level is None:
        return cap
    return float(min(cap, level + max(0.0, now - at) * rate))


def _bucket_wait(bucket: list[Any], quota: int | None, ask: Ask, cost: float, now: float) -> float:
    """0 if `cost` fits now, else seconds until it will (a cost above capacity needs a full bucket)."""
    if quota is None:
        return 0.0
    rate, cap = _rate(quota, ask.headroom, ask.window_s)
    need = min(cost, cap)
    level = _level(bucket, quota, ask.headroom, ask.window_s, now)
    return 0.0 if level >= need else (need - level) / rate


def _debit(bucket: list[Any], quota: int | None, ask: Ask, cost: float, now: float) -> None:
    if quota is None:
        return
    bucket[0] = _level(bucket, quota, ask.headroom, ask.window_s, now) - cost
    bucket[1] = max(bucket[1], now)  # never back in time: that would count a refill twice


def _prune(state: State, now: float) -> None:
    claims = state.setdefault("claims", {})
    for cid in [cid for cid, c in claims.items() if c[3] <= now]:
        del claims[cid]
    leases = state["leases"]
    for lid in [lid for lid, exp in leases.items() if exp <= now]:
        del leases[lid]
    br = state["br"]
    if br["probe"] is not None and br["probe"] not in leases:
        br["probe"] = None  # the probe's holder died or was cancelled: allow another one


def in_flight(state: State, now: float) -> int:
    return sum(1 for exp in state["leases"].values() if exp > now)


def breaker_state(state: State, now: float) -> str:
    """closed / open / half_open as a caller would see it at `now`."""
    br = state["br"]
    if br["state"] == "open" and now >= br["open_until"]:
        return "half_open"
    return str(br["state"])


def _ahead(state: State, claim: Claim | None, now: float) -> tuple[int, float]:
    """(number, token cost) of the claims that go before `claim` on this deployment."""
    if claim is None:
        return 0, 0.0
    claims = state["claims"]
    mine = claims.get(claim.id)
    since = mine[2] if mine is not None else now
    n, tokens = 0, 0.0
    for cid, (prio, cost, their_since, _) in claims.items():
        if cid != claim.id and (prio > claim.priority or (prio == claim.priority and their_since < since)):
            n += 1
            tokens += cost
    return n, tokens


def acquire(
    states: dict[str, State],
    asks: list[Ask],
    cost: float,
    lease_id: str,
    lease_ttl_s: float,
    now: float,
    claim: Claim | None = None,
) -> Grant | Denied:
    """Take a concurrency lease plus one request and `cost` tokens on the least-loaded eligible deployment."""
    result = _acquire(states, asks, cost, lease_id, lease_ttl_s, now, claim)
    if claim is not None:
        for ask in asks:
            claims = states[ask.name]["claims"]
            if isinstance(result, Grant):
                claims.pop(claim.id, None)
            else:
                old = claims.get(claim.id)
                since = old[2] if old is not None else now
                claims[claim.id] = [claim.priority, cost, since, now + CLAIM_TTL_S]
    return result


def _acquire(
    states: dict[str, State],
    asks: list[Ask],
    cost: float,
    lease_id: str,
    lease_ttl_s: float,
    now: float,
    claim: Claim | None,
) -> Grant | Denied:
    best: tuple[float, Ask, bool] | None = None
    soonest: float | None = math.inf
    reason = "none"
    by_breaker = 0
    for ask in asks:
        st = states[ask.name]
        _prune(st, now)
        br = st["br"]
        probe = False
        if br["state"] == "open":
            if now < br["open_until"]:
                soonest, by_breaker = _sooner(soonest, br["open_until"] - now), by_breaker + 1
                continue
            br["state"] = "half_open"
        if br["state"] == "half_open":
            if br["probe"] is not None:
                soonest, by_breaker = _sooner(soonest, None), by_breaker + 1
                continue
            probe = True
        if now < st["blocked_until"]:
            soonest, reason = _sooner(soonest, st["blocked_until"] - now), "retry_after"
            continue
        busy = len(st["leases"])
        n_ahead, tokens_ahead = _ahead(st, claim, now)
        if ask.concurrency is not None and busy + n_ahead >= ask.concurrency:
            soonest, reason = _sooner(soonest, None), "concurrency"
            continue
        wait = max(
            _bucket_wait(st["rpm"], ask.rpm, ask, 1.0 + n_ahead, now),
            _bucket_wait(st["tpm"], ask.tpm, ask, cost + tokens_ahead, now),
        )
        if wait > 0:
            soonest, reason = _sooner(soonest, wait), "rate"
            continue
        load = (busy + 1) / (ask.concurrency or 1000) / max(ask.weight, 1e-9)
        if best is None or load < best[0]:
            best = (load, ask, probe)
    if best is None:
        if by_breaker == len(asks):  # every deployment is open or probing: the caller may fall back
            reason = "open"
        return Denied(None if soonest is None or math.isinf(soonest) else soonest, reason)
    _, ask, probe = best
    st = states[ask.name]
    _debit(st["rpm"], ask.rpm, ask, 1.0, now)
    _debit(st["tpm"], ask.tpm, ask, cost, now)
    st["leases"][lease_id] = now + lease_ttl_s
    if probe:
        st["br"]["probe"] = lease_id
    return Grant(ask.name, lease_id, probe)


def _sooner(current: float | None, wait: float | None) -> float | None:
    """The earliest known wait; None (poll) wins over any time, since a release may come any moment."""
    if current is None or wait is None:
        return None
    return min(current, wait)


def renew(state: State, lease_ids: list[str], lease_ttl_s: float, now: float) -> None:
    leases = state["leases"]
    for lid in lease_ids:
        if lid in leases:
            leases[lid] = now + lease_ttl_s


def release(
    state: State, ask: Ask, lease_id: str, outcome: Outcome, policy: BreakerPolicy, jitter: float, now: float
) -> None:
    """Return the lease, settle TPM, and feed the breaker. `jitter` is uniform in [0, 1)."""
    leases = state["leases"]
    leases.pop(lease_id, None)
    if outcome.actual_tokens is not None and ask.tpm is not None:
        # Settle: refund an over-estimate, charge an under-estimate (the level may go into debt).
        _debit(state["tpm"], ask.tpm, ask, outcome.actual_tokens - outcome.reserved_tokens, now)
    br = state["br"]
    was_probe = br["probe"] == lease_id
    if was_probe:
        br["probe"] = None
    if outcome.kind == "rate_limited":
        pause = outcome.retry_after_s if outcome.retry_after_s is not None else 1.0
        state["blocked_until"] = max(state["blocked_until"], now + pause)
        return
    if outcome.kind == "neutral":
        return
    slot = int(now // (policy.window_s / _SLOTS))
    slots = [s for s in br["slots"] if s[0] > slot - _SLOTS]
    if not slots or slots[-1][0] != slot:
        slots.append([slot, 0, 0])
    slots[-1][1 if outcome.kind == "ok" else 2] += 1
    br["slots"] = slots
    if outcome.kind == "ok":
        br["streak"] = 0
        if br["state"] == "half_open" and was_probe:
            br.update(state="closed", slots=[], trips=0)
        return
    # A streak of failures trips at once even after a minute of successes (a deployment that just
    # died); the rate keeps sporadic failures of a busy deployment from tripping it.
    br["streak"] = streak = br.get("streak", 0) + 1
    fails = sum(s[2] for s in slots)
    total = fails + sum(s[1] for s in slots)
    trip = (br["state"] == "half_open" and was_probe) or (
        br["state"] == "closed"
        and fails >= policy.min_failures
        and (fails >= policy.failure_rate * total or streak >= policy.min_failures)
    )
    if trip:
        period = min(policy.max_open_s, policy.open_s * (2 ** min(br["trips"], 4))) * (1.0 + 0.5 * jitter)
        period = max(period, outcome.retry_after_s or 0.0)
        br.update(state="open", open_until=now + period, trips=br["trips"] + 1, probe=None, slots=[])


# -- tenant budgets ------------------------------------------------------------------------------
# A tenant's budget is one more document next to the deployments' (same store, same critical
# section): a counter of settled USD plus holds, each a lease (`leases`, so `renew` and expiry work
# as for a deployment's concurrency) with its amount (`holds`). A hold is the call's worst case;
# settling drops it and adds the real cost, so N processes together never reserve past the budget,
# and a process that dies mid-call gives its holds back when their leases expire.


def budget_key(tenant: str) -> str:
    """The state name of a tenant's budget (beside the deployments' names)."""
    return f"budget:{tenant}"


def new_budget_state() -> State:
    return {"spent": 0.0, "leases": {}, "holds": {}}


def _prune_holds(state: State, now: float) -> None:
    state.setdefault("spent", 0.0)
    leases = state.setdefault("leases", {})
    holds = state.setdefault("holds", {})
    for hid in [hid for hid, exp in leases.items() if exp <= now]:
        del leases[hid]
    for hid in [hid for hid in holds if hid not in leases]:
        del holds[hid]


def budget_totals(state: State, now: float) -> tuple[float, float]:
    """(settled USD, USD held by calls in flight)."""
    _prune_holds(state, now)
    return float(state["spent"]), float(sum(state["holds"].values()))


def budget_reserve(
    state: State, budget_usd: float, amount_usd: float, hold_id: str, ttl_s: float, now: float
) -> tuple[bool, float, float]:
    """Hold `amount_usd` if settled + held + it stays within the budget: (granted, spent, held before)."""
    spent, held = budget_totals(state, now)
    if spent + held + amount_usd > budget_usd:
        return False, spent, held
    state["leases"][hold_id] = now + ttl_s
    state["holds"][hold_id] = amount_usd
    return True, spent, held


def budget_settle(state: State, hold_id: str, actual_usd: float, now: float) -> None:
    """Drop the hold (the refund of the worst case) and count the real cost (0: the call failed)."""
    _prune_holds(state, now)
    state["leases"].pop(hold_id, None)
    state["holds"].pop(hold_id, None)
    state["spent"] = float(state["spent"]) + actual_usd
