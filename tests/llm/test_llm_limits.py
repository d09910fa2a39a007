"""One contract suite for every limits backend: in-process, SQLite file, real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storyloom.limits.base import LimitBackend
from storyloom.limits.state import (
    Ask,
    BreakerPolicy,
    Claim,
    Denied,
    Grant,
    Outcome,
    breaker_state,
    in_flight,
)

POLICY = BreakerPolicy(
    failure_rate=0.5,
    minimum_calls=4,
    window_s=60,
    open_s=0.4,
    max_open_s=2,
    half_open_calls=3,
    ramp_s=2.0,
    ramp_start=0.25,
)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LimitBackend]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'limits.db'}"
    else:
        url = request.getfixturevalue("redis_url")
    b = LimitBackend.from_url(url, POLICY)
    yield b
    await b.aclose()


def name() -> str:
    return f"d-{uuid.uuid4().hex[:8]}"  # unique per test: the Redis server is shared by the session


async def test_concurrency_lease_is_exclusive_and_released(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, 2)
    g1, g2 = await backend.acquire([ask], 0, 30), await backend.acquire([ask], 0, 30)
    assert isinstance(g1, Grant) and isinstance(g2, Grant)
    d = await backend.acquire([ask], 0, 30)
    assert isinstance(d, Denied) and d.reason == "concurrency" and d.wait_s is None
    await backend.release(ask, g1.lease_id, Outcome("ok"))
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)


async def test_lease_expires_when_its_holder_vanishes(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, 1)
    assert isinstance(await backend.acquire([ask], 0, 0.3), Grant)  # never released: holder "killed"
    assert isinstance(await backend.acquire([ask], 0, 0.3), Denied)
    await asyncio.sleep(0.4)
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)


async def test_renew_keeps_a_long_call_slot(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, 1)
    g = await backend.acquire([ask], 0, 0.3)
    assert isinstance(g, Grant)
    for _ in range(3):
        await asyncio.sleep(0.15)
        await backend.renew({ask.name: [g.lease_id]}, 0.3)
    assert isinstance(await backend.acquire([ask], 0, 0.3), Denied)


async def test_rpm_bucket_is_smooth_with_small_burst(backend: LimitBackend) -> None:
    # 600 rpm, headroom 0.01 -> capacity 6, refill 9.9/s: 6 at once, then one per ~0.1 s.
    ask = Ask(name(), 600, None, None, headroom=0.01)
    grants = [await backend.acquire([ask], 0, 30) for _ in range(7)]
    assert [isinstance(g, Grant) for g in grants] == [True] * 6 + [False]
    denied = grants[-1]
    assert isinstance(denied, Denied) and denied.reason == "rate" and denied.wait_s is not None
    assert 0.02 < denied.wait_s < 0.2
    await asyncio.sleep(denied.wait_s + 0.02)
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)


async def test_tpm_reserve_then_refund(backend: LimitBackend) -> None:
    ask = Ask(name(), None, 6000, None, headroom=0.5)  # capacity 3000 tokens, refill 50/s
    g = await backend.acquire([ask], 2500, 30)
    assert isinstance(g, Grant)
    assert isinstance(await backend.acquire([ask], 2500, 30), Denied)
    await backend.release(ask, g.lease_id, Outcome("ok", reserved_tokens=2500, actual_tokens=500))
    assert isinstance(await backend.acquire([ask], 2500, 30), Grant)


async def test_retry_after_pauses_the_deployment(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    g = await backend.acquire([ask], 0, 30)
    assert isinstance(g, Grant)
    await backend.release(ask, g.lease_id, Outcome("rate_limited", retry_after_s=0.3))
    d = await backend.acquire([ask], 0, 30)
    assert isinstance(d, Denied) and d.reason == "retry_after" and d.wait_s is not None and d.wait_s > 0.2
    await asyncio.sleep(0.35)
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)


async def test_routes_to_least_loaded_and_skips_full(backend: LimitBackend) -> None:
    a, b = Ask(name(), None, None, 4), Ask(name(), None, None, 4, weight=1.0)
    got = [await backend.acquire([a, b], 0, 30) for _ in range(8)]
    names = [g.deployment for g in got if isinstance(g, Grant)]
    assert names.count(a.name) == 4 and names.count(b.name) == 4
    assert isinstance(await backend.acquire([a, b], 0, 30), Denied)


async def test_claims_order_queue_heads_of_all_processes(backend: LimitBackend) -> None:
    # capacity 3000 tokens, slow refill: a big urgent head that was denied must not be overtaken by
    # a small, less urgent head of another process, nor by a later head of its own priority.
    ask = Ask(name(), None, 6000, None, headroom=0.5)
    assert isinstance(await backend.acquire([ask], 2000, 30), Grant)
    urgent = Claim("proc-a", 9)
    assert isinstance(await backend.acquire([ask], 2500, 30, urgent), Denied)
    small = await backend.acquire([ask], 500, 30, Claim("proc-b", 5))
    assert isinstance(small, Denied) and small.reason == "rate"  # 1000 left, but 2500 are claimed ahead
    assert isinstance(await backend.acquire([ask], 500, 30, Claim("proc-c", 9)), Denied)  # same prio, later
    unclaimed = await backend.acquire([ask], 2500, 30)  # no claim: it waits like everyone else would
    assert isinstance(unclaimed, Denied)
    await asyncio.sleep(0.1)
    snap = (await backend.snapshot([ask.name]))[ask.name]
    assert set(snap["claims"]) == {"proc-a", "proc-b", "proc-c"}


async def _finish(backend: LimitBackend, ask: Ask, kinds: list[str], ttl: float = 30) -> None:
    """One call per kind, each acquired and released at once."""
    for kind in kinds:
        g = await backend.acquire([ask], 0, ttl)
        assert isinstance(g, Grant), g
        await backend.release(ask, g.lease_id, Outcome(kind))  # type: ignore[arg-type]


async def _trip(backend: LimitBackend, ask: Ask) -> Denied:
    await _finish(backend, ask, ["fail"] * POLICY.minimum_calls)
    d = await backend.acquire([ask], 0, 30)
    assert isinstance(d, Denied) and d.reason == "open" and d.wait_s is not None
    return d


async def test_breaker_needs_the_minimum_number_of_calls_then_the_rate(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    await _finish(backend, ask, ["fail"] * (POLICY.minimum_calls - 1))
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)  # 3 of 3 failed, but 3 < 4 calls
    other = Ask(name(), None, None, None)
    await _finish(backend, other, ["ok", "ok", "fail", "ok", "fail", "ok", "fail"])
    await _finish(backend, other, ["neutral"])  # 3 of 7 < 50%: still closed (our own error: no count)
    await _finish(backend, other, ["fail"])
    d = await backend.acquire([other], 0, 30)  # 4 of 8 = 50%
    assert isinstance(d, Denied) and d.reason == "open"
    snap = (await backend.snapshot([other.name]))[other.name]
    assert breaker_state(snap, snap["br"]["open_until"] - 0.01) == "open" and snap["br"]["opens"] == 1


async def test_fast_failures_do_not_outvote_calls_still_in_flight(backend: LimitBackend) -> None:
    # Issue 10: 20 calls start together; the 5 that fail come back at once, the 15 good ones are
    # still streaming. By completion order 5 of 5 failed; of the calls started, 5 of 20 did.
    ask = Ask(name(), None, None, None)
    grants = [await backend.acquire([ask], 0, 30) for _ in range(20)]
    assert all(isinstance(g, Grant) for g in grants)
    for g in grants[:5]:
        await backend.release(ask, g.lease_id, Outcome("fail"))  # type: ignore[union-attr]
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)
    snap = (await backend.snapshot([ask.name]))[ask.name]
    assert snap["br"]["state"] == "closed" and snap["br"]["opens"] == 0


async def test_calls_whose_holder_died_no_longer_count_as_in_flight(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    for _ in range(20):
        assert isinstance(await backend.acquire([ask], 0, 0.2), Grant)  # never released: holder killed
    await asyncio.sleep(0.3)
    await _trip(backend, ask)  # 4 of 4 finished calls failed; the 20 expired leases are not pending


async def test_a_streak_of_failures_after_many_successes_does_not_trip(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    await _finish(backend, ask, ["ok"] * 20 + ["fail"] * 6)  # 6 in a row, 6 of 26 overall
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)


async def test_429s_pause_but_never_trip(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    for _ in range(10):
        await asyncio.sleep(0.06)  # past the previous pause
        g = await backend.acquire([ask], 0, 30)
        assert isinstance(g, Grant), g
        await backend.release(ask, g.lease_id, Outcome("rate_limited", retry_after_s=0.05))
    await asyncio.sleep(0.06)
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)
    snap = (await backend.snapshot([ask.name]))[ask.name]
    assert snap["br"]["opens"] == 0


async def test_half_open_permits_a_few_probes_and_closes_on_their_rate(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, 8)
    d = await _trip(backend, ask)
    await asyncio.sleep(d.wait_s + 0.05)  # type: ignore[operator]
    probes = [await backend.acquire([ask], 0, 30) for _ in range(POLICY.half_open_calls)]
    assert all(isinstance(p, Grant) and p.probe for p in probes)
    extra = await backend.acquire([ask], 0, 30)  # exactly half_open_calls probes, at once
    assert isinstance(extra, Denied) and extra.reason == "open"
    p1, p2, p3 = probes
    assert isinstance(p1, Grant) and isinstance(p2, Grant) and isinstance(p3, Grant)
    await backend.release(ask, p1.lease_id, Outcome("fail"))  # 1 of 3 < 50%: not reopened
    await backend.release(ask, p2.lease_id, Outcome("ok"))  # the last could still make it 2 of 3
    assert isinstance(await backend.acquire([ask], 0, 30), Denied)  # still half-open, no new probe
    snap = (await backend.snapshot([ask.name]))[ask.name]
    assert snap["br"]["state"] == "half_open"
    await backend.release(ask, p3.lease_id, Outcome("ok"))  # 1 of 3 failed: closed
    snap = (await backend.snapshot([ask.name]))[ask.name]
    assert snap["br"]["state"] == "closed" and snap["br"]["closed_at"] > 0 and snap["br"]["trips"] == 0


async def test_a_probe_that_ends_with_a_429_frees_its_place(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    d = await _trip(backend, ask)
    await asyncio.sleep(d.wait_s + 0.05)  # type: ignore[operator]
    probes = [await backend.acquire([ask], 0, 30) for _ in range(POLICY.half_open_calls)]
    p = probes[0]
    assert isinstance(p, Grant) and p.probe
    assert isinstance(await backend.acquire([ask], 0, 30), Denied)
    await backend.release(ask, p.lease_id, Outcome("rate_limited", retry_after_s=0.01))
    await asyncio.sleep(0.02)
    again = await backend.acquire([ask], 0, 30)
    assert isinstance(again, Grant) and again.probe


async def test_failed_probes_reopen_for_longer(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    d = await _trip(backend, ask)
    first = (await backend.snapshot([ask.name]))[ask.name]["br"]["open_until"]
    await asyncio.sleep(d.wait_s + 0.05)  # type: ignore[operator]
    probes = [await backend.acquire([ask], 0, 30) for _ in range(2)]
    for p, retry_after in zip(probes, (None, 1.5), strict=True):
        assert isinstance(p, Grant) and p.probe
        await backend.release(ask, p.lease_id, Outcome("fail", retry_after_s=retry_after))
    snap = (await backend.snapshot([ask.name]))[ask.name]  # 2 of 3 failed: open again
    assert snap["br"]["state"] == "open" and snap["br"]["open_until"] - first >= 1.5
    assert snap["br"]["trips"] == 2 and in_flight(snap, 0) == 0


async def test_after_closing_concurrency_ramps_back(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, 16)
    d = await _trip(backend, ask)
    await asyncio.sleep(d.wait_s + 0.05)  # type: ignore[operator]
    probes = [await backend.acquire([ask], 0, 30) for _ in range(POLICY.half_open_calls)]
    for p in probes:
        assert isinstance(p, Grant)
        await backend.release(ask, p.lease_id, Outcome("ok"))
    # just closed: max(half_open_calls, floor(16 * 0.25)) = 4 of the 16 allowed at once
    now = [await backend.acquire([ask], 0, 30) for _ in range(5)]
    assert [isinstance(g, Grant) for g in now] == [True] * 4 + [False]
    denied = now[4]
    assert isinstance(denied, Denied) and denied.reason == "ramp" and denied.wait_s is not None
    await asyncio.sleep(POLICY.ramp_s)
    later = [await backend.acquire([ask], 0, 30) for _ in range(13)]
    assert [isinstance(g, Grant) for g in later] == [True] * 12 + [False]  # all 16, then concurrency
    assert isinstance(later[12], Denied) and later[12].reason == "concurrency"


@pytest.mark.parametrize("store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_state_of_the_old_layout_is_taken_over(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # A data dir (SQLite) or a Redis written before issue 10 holds breakers with "probe" and slot
    # lists; they are replaced by a fresh breaker instead of failing every acquire.
    import json
    import sqlite3

    import redis

    ask = Ask(name(), None, None, 4)
    old = {
        "rpm": [None, 0.0],
        "tpm": [None, 0.0],
        "leases": {},
        "blocked_until": 0.0,
        "claims": {},
        "br": {"state": "closed", "slots": [[1, 2, 3]], "open_until": 0.0, "probe": None, "trips": 0},
    }
    if store == "sqlite":
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE llm_limits (name TEXT PRIMARY KEY, state TEXT NOT NULL)")
            conn.execute("INSERT INTO llm_limits VALUES (?, ?)", (ask.name, json.dumps(old)))
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).set(f"storyloom:llm:{ask.name}", json.dumps(old))
    b = LimitBackend.from_url(url, POLICY)
    g = await b.acquire([ask], 0, 30)
    assert isinstance(g, Grant)
    await b.release(ask, g.lease_id, Outcome("fail"))
    snap = (await b.snapshot([ask.name]))[ask.name]
    await b.aclose()
    assert "probe" not in snap["br"] and snap["br"]["state"] == "closed" and snap["starts"] == {}


class _CountingLeases(dict[str, float]):
    """A lease map that counts full walks over it (what `_prune` did on every acquire and release)."""

    walks = 0

    def items(self):  # type: ignore[override]
        type(self).walks += 1
        return super().items()


def test_pruning_walks_the_leases_only_once_something_can_have_expired() -> None:
    from storyloom.limits import state as rules

    ask = Ask("d", None, None, None)
    st = rules.new_state()
    states = {"d": st}
    t = 1000.0
    for i in range(200):  # 200 calls in flight, leases of 10 s granted over 2 s
        assert isinstance(rules.acquire(states, [ask], 1, f"l{i}", 10.0, t + i / 100, None, POLICY), Grant)
    st["leases"] = _CountingLeases(st["leases"])
    _CountingLeases.walks = 0
    for i in range(100):  # a steady run: each call ends and another starts, none has expired
        now = t + 3 + i / 100
        rules.release(st, ask, f"l{i}", Outcome("ok"), POLICY, 0.5, now)
        assert isinstance(rules.acquire(states, [ask], 1, f"n{i}", 10.0, now, None, POLICY), Grant)
    assert _CountingLeases.walks == 0 and len(st["leases"]) == 200
    # Past the earliest expiry: one walk drops every expired lease (and its breaker start) ...
    rules.release(st, ask, "n0", Outcome("ok"), POLICY, 0.5, t + 11.5)
    assert _CountingLeases.walks == 1
    assert sorted(st["leases"]) == sorted(st["starts"]) and "l150" not in st["leases"]
    assert all(exp > t + 11.5 for exp in st["leases"].values())
    assert in_flight(st, t + 11.5) == len(st["leases"]) == 49 + 99  # l151..l199, n1..n99
    # ... and the next walk waits for the next expiry, however many calls come meanwhile.
    assert st["prune_at"] == min(st["leases"].values())
    assert st["prune_at"] == t + 11.51  # l151's expiry
    rules.release(st, ask, "n1", Outcome("ok"), POLICY, 0.5, t + 11.505)
    assert _CountingLeases.walks == 1


def test_a_renewed_lease_is_not_pruned_and_a_new_short_one_is() -> None:
    from storyloom.limits import state as rules

    ask = Ask("d", None, None, 2)
    st = rules.new_state()
    states = {"d": st}
    assert isinstance(rules.acquire(states, [ask], 1, "long", 1.0, 0.0, None, POLICY), Grant)
    rules.renew(st, ["long"], 1.0, 0.9)  # a long call keeps its slot
    assert isinstance(rules.acquire(states, [ask], 1, "short", 0.2, 1.0, None, POLICY), Grant)
    assert isinstance(rules.acquire(states, [ask], 1, "x", 0.2, 1.1, None, POLICY), Denied)  # 2 of 2 busy
    # at 1.5 "short" (1.2) has expired and "long" (1.9) has not: the slot of "short" is free again
    assert isinstance(rules.acquire(states, [ask], 1, "y", 5.0, 1.5, None, POLICY), Grant)
    assert sorted(st["leases"]) == ["long", "y"] and sorted(st["starts"]) == ["long", "y"]
