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

POLICY = BreakerPolicy(min_failures=3, failure_rate=0.5, window_s=60, open_s=0.4, max_open_s=2)


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


async def test_breaker_opens_probes_once_and_closes(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    for _ in range(3):
        g = await backend.acquire([ask], 0, 30)
        assert isinstance(g, Grant)
        await backend.release(ask, g.lease_id, Outcome("fail"))
    d = await backend.acquire([ask], 0, 30)
    assert isinstance(d, Denied) and d.reason == "open" and d.wait_s is not None
    snap = (await backend.snapshot([ask.name]))[ask.name]
    assert breaker_state(snap, snap["br"]["open_until"] - 0.01) == "open"
    await asyncio.sleep(d.wait_s + 0.05)
    probe = await backend.acquire([ask], 0, 30)
    assert isinstance(probe, Grant) and probe.probe
    second = await backend.acquire([ask], 0, 30)  # exactly one probe at a time
    assert isinstance(second, Denied) and second.reason == "open"
    await backend.release(ask, probe.lease_id, Outcome("ok"))
    after = [await backend.acquire([ask], 0, 30) for _ in range(3)]
    assert all(isinstance(g, Grant) and not g.probe for g in after)


async def test_failed_probe_reopens_for_longer(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    for _ in range(3):
        g = await backend.acquire([ask], 0, 30)
        assert isinstance(g, Grant)
        await backend.release(ask, g.lease_id, Outcome("fail"))
    first = (await backend.snapshot([ask.name]))[ask.name]["br"]["open_until"]
    await asyncio.sleep(0.7)
    probe = await backend.acquire([ask], 0, 30)
    assert isinstance(probe, Grant) and probe.probe
    await backend.release(ask, probe.lease_id, Outcome("fail", retry_after_s=1.5))
    snap = (await backend.snapshot([ask.name]))[ask.name]
    assert snap["br"]["state"] == "open" and snap["br"]["open_until"] - first >= 1.5
    assert in_flight(snap, 0) == 0


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


async def test_a_streak_of_failures_trips_even_after_many_successes(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    for kind in ["ok"] * 20 + ["fail"] * 3:
        g = await backend.acquire([ask], 0, 30)
        assert isinstance(g, Grant)
        await backend.release(ask, g.lease_id, Outcome(kind))  # type: ignore[arg-type]
    d = await backend.acquire([ask], 0, 30)
    assert isinstance(d, Denied) and d.reason == "open"  # 3 of 23 is under the rate, but 3 in a row


async def test_sporadic_failures_of_a_busy_deployment_do_not_trip(backend: LimitBackend) -> None:
    ask = Ask(name(), None, None, None)
    for kind in (["ok"] * 6 + ["fail"]) * 4:
        g = await backend.acquire([ask], 0, 30)
        assert isinstance(g, Grant)
        await backend.release(ask, g.lease_id, Outcome(kind))  # type: ignore[arg-type]
    assert isinstance(await backend.acquire([ask], 0, 30), Grant)
