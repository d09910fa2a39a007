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

from storyloom.limits import breaker as brk
from storyloom.limits.breaker import BreakerPolicy, breaker_state

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
    "in_flight",
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


def new_state() -> State:
    return {
        "rpm": [None, 0.0],  # [level or None (= full), updated_at]
        "tpm": [None, 0.0],
        "leases": {},  # lease_id -> expires_at
        "starts": {},  # lease_id -> breaker slot it started in (see breaker.py)
        "blocked_until": 0.0,
        "claims": {},  # claim id -> [priority, cost, since, expires_at]
        "br": brk.new_breaker(),
        "prune_at": None,  # nothing expires before this (see _prune); None: walk (nothing to walk)
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
    """Drop expired claims and leases (and the breaker's entries of those leases).

    Amortised O(1): `prune_at` is a time no later than the earliest expiry in the state (every
    insert lowers it, renewals only push expiries later), so before it nothing can have expired
    and the walk over hundreds of leases is skipped; at it, one walk drops what expired and sets
    the next `prune_at`. A state without `prune_at` (older layout) is walked at once."""
    brk.breaker_of(state)
    prune_at = state.get("prune_at")
    if prune_at is not None and now < prune_at:
        return
    claims = state.setdefault("claims", {})
    for cid in [cid for cid, c in claims.items() if c[3] <= now]:
        del claims[cid]
    leases = state["leases"]
    for lid in [lid for lid, exp in leases.items() if exp <= now]:
        del leases[lid]
    brk.prune(state)  # a probe whose holder died frees its place: another one may start
    # None (nothing left that can expire): the next call walks the empty state, or an insert sets it.
    state["prune_at"] = min((*leases.values(), *(c[3] for c in claims.values())), default=None)


def _expires(state: State, at: float) -> None:
    """Something was inserted that expires `at`: keep `prune_at` no later than it."""
    prune_at = state.get("prune_at")
    if prune_at is None or at < prune_at:
        state["prune_at"] = at


def in_flight(state: State, now: float) -> int:
    return sum(1 for exp in state["leases"].values() if exp > now)


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
    claim: Claim | None,
    policy: BreakerPolicy,
) -> Grant | Denied:
    """Take a concurrency lease plus one request and `cost` tokens on the least-loaded eligible deployment."""
    result = _acquire(states, asks, cost, lease_id, lease_ttl_s, now, claim, policy)
    if claim is not None:
        for ask in asks:
            claims = states[ask.name]["claims"]
            if isinstance(result, Grant):
                claims.pop(claim.id, None)
            else:
                old = claims.get(claim.id)
                since = old[2] if old is not None else now
                claims[claim.id] = [claim.priority, cost, since, now + CLAIM_TTL_S]
                _expires(states[ask.name], now + CLAIM_TTL_S)
    return result


def _acquire(
    states: dict[str, State],
    asks: list[Ask],
    cost: float,
    lease_id: str,
    lease_ttl_s: float,
    now: float,
    claim: Claim | None,
    policy: BreakerPolicy,
) -> Grant | Denied:
    best: tuple[float, Ask, bool] | None = None
    soonest: float | None = math.inf
    reason = "none"
    by_breaker = 0
    for ask in asks:
        st = states[ask.name]
        _prune(st, now)
        br = st["br"]
        allowed, probe, breaker_wait = brk.may_start(br, policy, now)
        if not allowed:
            soonest, by_breaker = _sooner(soonest, breaker_wait), by_breaker + 1
            continue
        if now < st["blocked_until"]:
            soonest, reason = _sooner(soonest, st["blocked_until"] - now), "retry_after"
            continue
        busy = len(st["leases"])
        n_ahead, tokens_ahead = _ahead(st, claim, now)
        if ask.concurrency is not None and busy + n_ahead >= ask.concurrency:
            soonest, reason = _sooner(soonest, None), "concurrency"
            continue
        cap = brk.ramp_cap(br, ask.concurrency, policy, now)
        if cap is not None and busy + n_ahead >= cap:
            soonest, reason = _sooner(soonest, brk.ramp_wait_s(br, ask.concurrency, policy, now)), "ramp"
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
    _expires(st, now + lease_ttl_s)
    brk.on_start(st, lease_id, probe, len(st["leases"]), policy, now)
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
    state["leases"].pop(lease_id, None)
    br = brk.breaker_of(state)
    start_slot = state["starts"].pop(lease_id, None)
    was_probe = br["probes"].pop(lease_id, None) is not None  # a 429 or neutral probe frees its place
    _prune(state, now)  # expired leases are not in flight: they must not count as not-yet-failed
    if outcome.actual_tokens is not None and ask.tpm is not None:
        # Settle: refund an over-estimate, charge an under-estimate (the level may go into debt).
        _debit(state["tpm"], ask.tpm, ask, outcome.actual_tokens - outcome.reserved_tokens, now)
    if outcome.kind == "rate_limited":
        pause = outcome.retry_after_s if outcome.retry_after_s is not None else 1.0
        state["blocked_until"] = max(state["blocked_until"], now + pause)
    elif outcome.kind in ("ok", "fail"):
        brk.on_outcome(
            state, was_probe, start_slot, outcome.kind == "ok", outcome.retry_after_s, policy, jitter, now
        )
