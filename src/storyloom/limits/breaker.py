"""The circuit breaker of one deployment: the pure rules, applied by every backend (and by limits.lua).

Modelled on resilience4j's breaker (sliding window, `minimumNumberOfCalls`, `failureRateThreshold`,
`permittedNumberOfCallsInHalfOpenState`), with two changes that an LLM provider needs:

* **Outcomes are counted by the slot of their start, and calls still in flight count as not yet
  failed.** A 5xx comes back in milliseconds, a good stream after seconds; counted by completion,
  the first outcomes after any burst of starts are all failures and a 10% error rate looks like
  100% (issue 10: the old breaker, which counted completions and also tripped on a streak of 5, was
  open 101 of 157 samples at 10% 5xx). Counting the calls in flight in the denominator gives the
  rate among the calls *started* in a span, which is what the provider actually did: unbiased in
  steady state, and correct at once for a deployment that fails everything fast. We chose this over
  attributing outcomes to start slots alone, which still cannot judge a slot until its slowest
  call has ended (a detection delay of a whole call), and over weighting by duration, which needs a
  latency model.
* **It trips on a sustained rate, never on a streak**: for some recent span of slots (the newest
  alone, the newest two, ... the whole window) holding at least `minimum_calls` finished calls,
  failures are at least `failure_rate` of the calls started there. The newest spans let a
  deployment that just died trip after about `minimum_calls` failures even after a minute of
  successes; the minimum keeps sporadic failures (14% under the chaos profile) from ever getting
  there: P(≥ 10 of 20 fail | p = 0.14) ≈ 1.5e-4, less still with the calls in flight counted.

Open: no calls for a jittered `open_s`, doubling on each failed half-open up to `max_open_s` (and
never less than the failure's Retry-After). Half-open: up to `half_open_calls` probes at once; it
closes as soon as the probes that succeeded make the rate unreachable, and opens again as soon as
the failed ones reach it. Closed again, the deployment's share of concurrency ramps from
`ramp_start` of its full level to all of it over `ramp_s`, so the backlog that waited during the
open period is not released onto a provider that has just recovered all at once.

429s never reach these rules (they are quota signals: the pause and the limits handle them), nor
do our own bad requests ("neutral").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SLOTS",
    "BreakerPolicy",
    "breaker_of",
    "breaker_state",
    "may_start",
    "new_breaker",
    "on_outcome",
    "on_start",
    "prune",
    "ramp_cap",
    "ramp_wait_s",
    "slot_of",
]

State = dict[str, Any]

SLOTS = 12  # the window in 12 slots: a sliding window to within window_s / 12


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a deployment is judged broken, and how traffic returns to it (see the module doc)."""

    failure_rate: float = 0.5  # share of started calls that failed, 0 < r <= 1
    minimum_calls: int = 20  # finished calls a span needs before its rate is judged
    window_s: float = 60.0
    open_s: float = 15.0
    max_open_s: float = 60.0
    half_open_calls: int = 3
    ramp_s: float = 10.0  # 0: no ramp, full concurrency at once after closing
    ramp_start: float = 0.1  # share of the full concurrency allowed right after closing


def new_breaker() -> State:
    return {
        "state": "closed",
        "slots": {},  # str(slot index) -> [ok, failed], by the slot each call started in
        "open_until": 0.0,
        "trips": 0,  # consecutive openings without a close: the open period doubles with each
        "probes": {},  # lease id -> 1: half-open probes in flight
        "probe_ok": 0,
        "probe_fail": 0,
        "closed_at": 0.0,  # the last close from half-open: the ramp runs from here
        "peak": 0,  # the most calls in flight at once while closed: the ramp's full level
        "opens": 0,  # how many times it ever opened (for metrics and benches; never reset)
    }


def breaker_of(state: State) -> State:
    """The state's breaker, replacing one of the old layout (before issue 10) by a fresh one."""
    br = state.get("br")
    if not isinstance(br, dict) or "probes" not in br:
        br = state["br"] = new_breaker()
    state.setdefault("starts", {})
    return br


def slot_of(t: float, policy: BreakerPolicy) -> int:
    # math.floor(a / b), not a // b: limits.lua computes it this way and must agree to the slot.
    return math.floor(t / (policy.window_s / SLOTS))


def breaker_state(state: State, now: float) -> str:
    """closed / open / half_open as a caller would see it at `now`."""
    br = state["br"]
    if br["state"] == "open" and now >= br["open_until"]:
        return "half_open"
    return str(br["state"])


def ramp_cap(br: State, concurrency: int | None, policy: BreakerPolicy, now: float) -> int | None:
    """How many calls may be in flight while the deployment ramps back after closing (None: no cap)."""
    if br["state"] != "closed" or policy.ramp_s <= 0 or now >= br["closed_at"] + policy.ramp_s:
        return None
    full = concurrency if concurrency is not None else max(int(br["peak"]), policy.half_open_calls)
    share = policy.ramp_start + (1.0 - policy.ramp_start) * (now - float(br["closed_at"])) / policy.ramp_s
    return max(policy.half_open_calls, math.floor(full * share))


def ramp_wait_s(br: State, concurrency: int | None, policy: BreakerPolicy, now: float) -> float:
    """About when the ramp allows one more call: the cap's step, or the ramp's end if sooner."""
    full = concurrency if concurrency is not None else max(int(br["peak"]), policy.half_open_calls)
    step = policy.ramp_s / max(1.0, full * (1.0 - policy.ramp_start))
    return max(0.001, min(float(br["closed_at"]) + policy.ramp_s - now, step))


def may_start(br: State, policy: BreakerPolicy, now: float) -> tuple[bool, bool, float | None]:
    """(allowed, as a probe, wait if not allowed: None = until a probe ends). Moves open to half-open."""
    if br["state"] == "open":
        if now < br["open_until"]:
            return False, False, br["open_until"] - now
        br.update(state="half_open", probes={}, probe_ok=0, probe_fail=0)
    if br["state"] == "half_open":
        started = len(br["probes"]) + br["probe_ok"] + br["probe_fail"]
        if started >= policy.half_open_calls:
            return False, False, None
        return True, True, None
    return True, False, None


def on_start(
    state: State, lease_id: str, probe: bool, busy_after: int, policy: BreakerPolicy, now: float
) -> None:
    br = state["br"]
    state["starts"][lease_id] = slot_of(now, policy)
    if probe:
        br["probes"][lease_id] = 1
    elif br["state"] == "closed":
        br["peak"] = max(int(br["peak"]), busy_after)


def prune(state: State) -> None:
    """Forget the starts and probes of leases that are gone (expired: their holder died)."""
    leases = state["leases"]
    starts = state["starts"]
    for lid in [lid for lid in starts if lid not in leases]:
        del starts[lid]
    probes = state["br"]["probes"]
    for lid in [lid for lid in probes if lid not in leases]:
        del probes[lid]


def on_outcome(
    state: State,
    was_probe: bool,
    start_slot: int | None,
    ok: bool,
    retry_after_s: float | None,
    policy: BreakerPolicy,
    jitter: float,
    now: float,
) -> None:
    """Feed one finished call (its lease, start and probe entry already removed). `jitter` is in [0, 1)."""
    br = state["br"]
    if was_probe:
        if br["state"] != "half_open":
            return
        br["probe_ok" if ok else "probe_fail"] += 1
        n, rate = policy.half_open_calls, policy.failure_rate
        if br["probe_fail"] >= rate * n:
            _trip(br, retry_after_s, policy, jitter, now)
        elif n - br["probe_ok"] < rate * n:  # even if every other probe failed, the rate is not reached
            br.update(state="closed", slots={}, trips=0, probes={}, closed_at=now)
        return
    if br["state"] != "closed":
        return  # a call granted before the trip: the open period already judged it
    cur = slot_of(now, policy)
    lo = cur - SLOTS + 1
    slots = {k: v for k, v in br["slots"].items() if int(k) >= lo}
    slot = start_slot if start_slot is not None else cur
    if slot >= lo:
        counts = slots.setdefault(str(slot), [0, 0])
        counts[0 if ok else 1] += 1
    br["slots"] = slots
    if not ok and _rate_reached(state, slots, cur, lo, policy):
        _trip(br, retry_after_s, policy, jitter, now)


def _rate_reached(state: State, slots: State, cur: int, lo: int, policy: BreakerPolicy) -> bool:
    in_flight: dict[int, int] = {}
    for s in state["starts"].values():
        if s >= lo:
            in_flight[s] = in_flight.get(s, 0) + 1
    fails = oks = pending = 0
    for j in range(cur, lo - 1, -1):
        counts = slots.get(str(j))
        if counts is not None:
            oks += counts[0]
            fails += counts[1]
        pending += in_flight.get(j, 0)
        if fails + oks >= policy.minimum_calls and fails >= policy.failure_rate * (fails + oks + pending):
            return True
    return False


def _trip(br: State, retry_after_s: float | None, policy: BreakerPolicy, jitter: float, now: float) -> None:
    period = min(policy.max_open_s, policy.open_s * (2 ** min(br["trips"], 4))) * (1.0 + 0.5 * jitter)
    period = max(period, retry_after_s or 0.0)
    br.update(
        state="open",
        open_until=now + period,
        trips=br["trips"] + 1,
        opens=br.get("opens", 0) + 1,
        probes={},
        probe_ok=0,
        probe_fail=0,
        slots={},
        closed_at=0.0,
    )
