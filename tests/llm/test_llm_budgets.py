"""Tenant budgets held in the shared LimitBackend: two gateways (as two processes) never overspend;
per-period budgets (UTC day, month, lifetime) held all at once, each resetting with its period."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storyloom.config import Settings
from storyloom.errors import BudgetExceededError, ProviderError
from storyloom.limits.base import LimitBackend
from storyloom.limits.budgets import BudgetDenied, BudgetHold, BudgetLimits, BudgetUsage
from storyloom.llm.budget_status import budget_status
from storyloom.llm.deployments import Deployment, GatewayConfig, load_gateway_config
from storyloom.llm.gateway import Gateway
from storyloom.llm.ledger import PriceTable
from storyloom.llm.tokens import estimate_message_tokens
from storyloom.llm.types import CallMeta, ChatRequest, Usage
from storyloom.sim import ModelProfile, SimConfig, SimHandle, run_sim_in_thread

MSGS = [{"role": "user", "content": "Write the next scene of the story."}]
ANSWER = 60  # the sim's answer is longer: max_tokens cuts it to exactly this many tokens


@pytest.fixture
def slow_sim() -> Iterator[SimHandle]:
    """Answers take ~0.4 s, so every concurrent call holds its reservation before any settles."""
    with run_sim_in_thread(
        SimConfig(default=ModelProfile(latency_s=0.4, ttft_s=0.02, answer_tokens=400))
    ) as s:
        yield s


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def limits_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'limits.db'}"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'limits.db'}"
    else:
        url = request.getfixturevalue("redis_url")
    b = LimitBackend.from_url(url)
    yield b
    await b.aclose()


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()  # type: ignore[misc]


def gateway(url: str, sim: SimHandle, budgets: dict[str, float], **kw: Any) -> Gateway:
    dep = Deployment(name="d1", model="sim-writer", base_url=sim.url, provider_model="sim-writer")
    return Gateway(
        GatewayConfig(
            deployments=(dep,),
            default_model="sim-writer",
            tenant_budgets_usd=budgets,
            limits_url=url,
            **kw,
        )
    )


def req(tenant: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(model="sim-writer", messages=MSGS, meta=CallMeta(tenant=tenant), max_tokens=max_tokens)


async def _one_call_cost(url: str, sim: SimHandle, max_tokens: int) -> float:
    """The real cost of the request the tests make (a tenant without a budget)."""
    g = gateway(url, sim, {})
    r = await g.chat(req("probe", max_tokens))
    await g.aclose()
    sim.reset_stats()
    return r.cost_usd


async def test_concurrent_first_calls_of_two_processes_never_exceed_the_budget(
    limits_url: str, slow_sim: SimHandle
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"  # the Redis server is shared by the session
    cost = await _one_call_cost(limits_url, slow_sim, ANSWER)  # real cost == worst case here
    assert cost > 0
    budget = 3.5 * cost  # 3 calls fit; each process alone would let 3 run, together 6
    a = gateway(limits_url, slow_sim, {tenant: budget})
    b = gateway(limits_url, slow_sim, {tenant: budget})
    calls: list[Any] = [g.chat(req(tenant, ANSWER)) for g in (a, b) for _ in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, BudgetExceededError) and not e.retryable for e in failed), failed
    assert len(ok) == 3 and len(failed) == 7
    spent = sum(r.cost_usd for r in ok)
    assert spent <= budget
    assert a.ledger.total("tenant", tenant).cost_usd + b.ledger.total("tenant", tenant).cost_usd == spent
    assert slow_sim.stats()["requests"] == len(ok)  # the refused calls never reached the provider
    use = await a.backend.budget_usage(tenant)
    assert use.held_usd == 0 and use.spent_usd == pytest.approx(spent)
    # once it is spent, a later call of either process is refused before the provider
    with pytest.raises(BudgetExceededError):
        await b.chat(req(tenant, ANSWER))
    assert slow_sim.stats()["requests"] == len(ok)
    await a.aclose()
    await b.aclose()


async def test_settling_refunds_the_reservation_to_the_real_cost_across_processes(
    limits_url: str, sim: SimHandle
) -> None:
    tenant = f"r-{uuid.uuid4().hex[:8]}"
    big = 2000  # reserved worst case: prompt + 2000 output tokens; the sim answers ~120
    real = await _one_call_cost(limits_url, sim, big)
    worst = PriceTable.bundled().cost(Usage(estimate_message_tokens(MSGS), big), "sim-writer")
    assert real < worst / 5
    # After one call the rest covers another worst case only if the first was refunded to its real
    # cost; after two (one per process) it no longer does, since both processes' spend counts.
    budget = worst + 1.5 * real
    a = gateway(limits_url, sim, {tenant: budget})
    b = gateway(limits_url, sim, {tenant: budget})
    r1 = await a.chat(req(tenant, big))
    r2 = await b.chat(req(tenant, big))  # fits: real + worst <= budget
    with pytest.raises(BudgetExceededError):  # 2 * real + worst > budget, though b alone spent 1 * real
        await b.chat(req(tenant, big))
    assert r1.cost_usd == pytest.approx(real) and r2.cost_usd == pytest.approx(real)
    use = await a.backend.budget_usage(tenant)
    assert use.held_usd == 0 and use.spent_usd == pytest.approx(r1.cost_usd + r2.cost_usd)
    assert sim.stats()["requests"] == 2
    await a.aclose()
    await b.aclose()


async def test_a_failed_call_releases_its_hold(backend: LimitBackend) -> None:
    tenant = f"h-{uuid.uuid4().hex[:8]}"
    limits = BudgetLimits(budget_usd=1.0)
    hold = await backend.reserve_budget(tenant, limits, 0.6, 0, 30)
    assert isinstance(hold, BudgetHold)
    other = await backend.reserve_budget(tenant, limits, 0.6, 0, 30)
    assert isinstance(other, BudgetDenied) and other.usage.held_usd == pytest.approx(0.6)
    await backend.settle_budget(hold, 0.0)
    assert await backend.budget_usage(tenant) == BudgetUsage()
    expiring = await backend.reserve_budget(tenant, limits, 0.6, 0, 0.05)  # its process died
    assert isinstance(expiring, BudgetHold)
    await asyncio.sleep(0.1)
    assert await backend.budget_usage(tenant) == BudgetUsage()


async def test_a_call_failing_without_usage_releases_its_hold(limits_url: str, sim: SimHandle) -> None:
    tenant = f"f-{uuid.uuid4().hex[:8]}"
    sim.configure(faults={"error_5xx": 1.0})
    g = gateway(limits_url, sim, {tenant: 1.0}, max_attempts=1)
    with pytest.raises(ProviderError) as info:
        await g.chat(req(tenant, 100))
    assert not isinstance(info.value, BudgetExceededError)
    assert await g.backend.budget_usage(tenant) == BudgetUsage()
    await g.aclose()


async def test_a_cancelled_call_releases_its_hold(limits_url: str, slow_sim: SimHandle) -> None:
    tenant = f"c-{uuid.uuid4().hex[:8]}"
    g = gateway(limits_url, slow_sim, {tenant: 1.0})
    task = asyncio.create_task(g.chat(req(tenant, 100)))
    await asyncio.sleep(0.15)
    use = await g.backend.budget_usage(tenant)
    assert use.spent_usd == 0.0 and use.held_usd > 0  # in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert await g.backend.budget_usage(tenant) == BudgetUsage()
    await g.aclose()


# -- per period -----------------------------------------------------------------------------------

MARCH_10 = utc(2031, 3, 10, 12)  # a day in the future: its documents do not expire during the test
DAY = 86_400.0


async def test_a_call_must_fit_every_period_at_once_and_each_resets_with_its_period(
    backend: LimitBackend,
) -> None:
    tenant = f"p-{uuid.uuid4().hex[:8]}"
    limits = BudgetLimits(budget_usd=10.0, daily_budget_usd=1.0, monthly_budget_usd=2.0)

    async def spend(usd: float, now: float) -> BudgetHold | BudgetDenied:
        got = await backend.reserve_budget(tenant, limits, usd, 0, 30, now=now)
        if isinstance(got, BudgetHold):
            assert len(got.keys) == 3  # held in the lifetime, the month and the day at once
            await backend.settle_budget(got, usd)
        return got

    assert isinstance(await spend(0.8, MARCH_10), BudgetHold)
    denied = await spend(0.8, MARCH_10 + 3600)  # same day: 1.6 > 1.0
    assert isinstance(denied, BudgetDenied) and denied.spec.period == "day"
    assert denied.limit_name == "daily_budget_usd" and denied.usage.spent_usd == pytest.approx(0.8)
    assert denied.spec.ends_at == utc(2031, 3, 11)
    assert isinstance(await spend(0.9, MARCH_10 + DAY), BudgetHold)  # a new day; month at 1.7
    month = await spend(0.5, MARCH_10 + 2 * DAY)  # day 0.5 fits, month 2.2 does not
    assert isinstance(month, BudgetDenied) and month.limit_name == "monthly_budget_usd"
    assert month.spec.ends_at == utc(2031, 4, 1)
    # a denied call held nothing anywhere, and each period counts only its own spend
    day = await backend.budget_usage(tenant, "day", MARCH_10 + 2 * DAY)
    assert day == BudgetUsage()
    assert (await backend.budget_usage(tenant, "day", MARCH_10)).spent_usd == pytest.approx(0.8)
    assert (await backend.budget_usage(tenant, "month", MARCH_10)).spent_usd == pytest.approx(1.7)
    assert (await backend.budget_usage(tenant)).spent_usd == pytest.approx(1.7)
    assert isinstance(await spend(1.0, utc(2031, 4, 1, 0, 0, 1)), BudgetHold)  # April: all reset


async def test_token_budgets_per_day(backend: LimitBackend) -> None:
    tenant = f"k-{uuid.uuid4().hex[:8]}"
    limits = BudgetLimits(daily_budget_tokens=1000)
    hold = await backend.reserve_budget(tenant, limits, 0.0, 600, 30, now=MARCH_10)
    assert isinstance(hold, BudgetHold) and len(hold.keys) == 1
    held = await backend.reserve_budget(tenant, limits, 0.0, 600, 30, now=MARCH_10)
    assert isinstance(held, BudgetDenied) and held.limit_name == "daily_budget_tokens"
    assert held.usage.held_tokens == 600
    await backend.settle_budget(hold, 0.0, 350)
    use = await backend.budget_usage(tenant, "day", MARCH_10)
    assert use.spent_tokens == 350 and use.held_tokens == 0
    assert isinstance(await backend.reserve_budget(tenant, limits, 0.0, 600, 30, now=MARCH_10), BudgetHold)


async def test_periods_long_over_are_forgotten(backend: LimitBackend) -> None:
    # Redis expires them (EXPIREAT a day after the period ends); memory and SQLite sweep them when
    # a new period's document is created, so neither grows with the days.
    tenant = f"x-{uuid.uuid4().hex[:8]}"
    limits = BudgetLimits(daily_budget_usd=1.0)
    old = time.time() - 3 * DAY
    hold = await backend.reserve_budget(tenant, limits, 0.5, 0, 30, now=old)
    assert isinstance(hold, BudgetHold)
    await backend.settle_budget(hold, 0.5)
    today = await backend.reserve_budget(tenant, limits, 0.1, 0, 30)
    assert isinstance(today, BudgetHold)
    assert await backend.budget_usage(tenant, "day", old) == BudgetUsage()


async def test_period_documents_carry_their_expiry_in_redis(redis_url: str) -> None:
    import redis.asyncio as aioredis

    backend = LimitBackend.from_url(redis_url)
    tenant = f"e-{uuid.uuid4().hex[:8]}"
    limits = BudgetLimits(budget_usd=5.0, daily_budget_usd=1.0, monthly_budget_usd=2.0)
    hold = await backend.reserve_budget(tenant, limits, 0.5, 0, 30, now=MARCH_10)
    assert isinstance(hold, BudgetHold)
    await backend.settle_budget(hold, 0.5)
    r = aioredis.Redis.from_url(redis_url)
    ttls = {
        k.split(":")[2] if k.count(":") == 3 else "total": await r.expiretime(f"storyloom:llm:{k}")
        for k in hold.keys
    }
    await r.aclose()
    await backend.aclose()
    assert ttls["total"] == -1  # the lifetime spend never expires
    assert ttls["day"] == int(utc(2031, 3, 12)) and ttls["month"] == int(utc(2031, 4, 2))


async def test_budget_status_says_which_limit_and_until_when(backend: LimitBackend) -> None:
    tenant = f"s-{uuid.uuid4().hex[:8]}"
    limits = BudgetLimits(budget_usd=3.0, daily_budget_usd=1.0)
    status = await budget_status(backend, tenant, limits, MARCH_10)
    assert not status.over and status.limit_name == ""
    hold = await backend.reserve_budget(tenant, limits, 1.0, 0, 30, now=MARCH_10)
    assert isinstance(hold, BudgetHold)
    assert not (await budget_status(backend, tenant, limits, MARCH_10)).over  # held, not yet spent
    await backend.settle_budget(hold, 1.0)
    status = await budget_status(backend, tenant, limits, MARCH_10)
    assert status.over and status.limit_name == "daily_budget_usd"
    assert status.retry_after_s == pytest.approx(12 * 3600)  # noon to the next UTC midnight
    assert "daily" in status.message and "2031-03-11T00:00:00Z" in status.message
    assert not (await budget_status(backend, tenant, limits, MARCH_10 + DAY)).over
    for day in (1, 2):  # two more days at the daily cap: the lifetime budget is spent too
        h = await backend.reserve_budget(tenant, limits, 1.0, 0, 30, now=MARCH_10 + day * DAY)
        assert isinstance(h, BudgetHold)
        await backend.settle_budget(h, 1.0)
    status = await budget_status(backend, tenant, limits, MARCH_10 + 3 * DAY)
    assert status.over and status.limit_name == "budget_usd" and status.retry_after_s is None


async def test_the_gateway_names_the_period_and_its_reset(sim: SimHandle, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'limits.db'}"
    dep = Deployment(name="d1", model="sim-writer", base_url=sim.url, provider_model="sim-writer")
    g = Gateway(
        GatewayConfig(
            deployments=(dep,),
            default_model="sim-writer",
            tenant_budgets={"acme": BudgetLimits(daily_budget_usd=0.000001)},
            limits_url=url,
        )
    )
    with pytest.raises(BudgetExceededError) as info:
        await g.chat(req("acme", 100))
    await g.aclose()
    message = str(info.value)
    assert "daily budget (daily_budget_usd)" in message and "it resets at" in message
    assert info.value.retry_after_s is not None and 0 < info.value.retry_after_s <= DAY
    assert sim.stats()["requests"] == 0


def test_period_budgets_from_the_document_and_the_settings(tmp_path: Path) -> None:
    doc = (
        "deployments: [{model: m, base_url: 'http://a/v1'}]\n"
        "tenants:\n"
        "  alice: {weight: 2, budget_usd: 9, daily_budget_usd: 1, monthly_budget_usd: 5}\n"
        "  bob: {monthly_budget_tokens: 100000}\n"
    )
    settings = Settings(
        deployments=doc,
        data_dir=tmp_path,
        tenant_daily_budgets_usd={"alice": 2.0, "carol": 0.5},
        tenant_daily_budgets_tokens={"bob": 5000},
    )
    cfg = load_gateway_config(settings)
    assert cfg.budget_limits("alice") == BudgetLimits(
        budget_usd=9, daily_budget_usd=2.0, monthly_budget_usd=5
    )
    assert cfg.budget_limits("bob") == BudgetLimits(daily_budget_tokens=5000, monthly_budget_tokens=100000)
    assert cfg.budget_limits("carol") == BudgetLimits(daily_budget_usd=0.5)
    assert not cfg.budget_limits("dave").any
    # budgets must be shared by every process of the data dir, so they are never in process memory
    assert cfg.limits_url.startswith("sqlite:///")
