"""Tenant budgets held in the shared LimitBackend: two gateways (as two processes) never overspend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storyloom.errors import BudgetExceededError, ProviderError
from storyloom.limits.base import LimitBackend
from storyloom.llm.deployments import Deployment, GatewayConfig
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
    settled, held = await a.backend.budget_usage(tenant)
    assert held == 0 and settled == pytest.approx(spent)
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
    settled, held = await a.backend.budget_usage(tenant)
    assert held == 0 and settled == pytest.approx(r1.cost_usd + r2.cost_usd)
    assert sim.stats()["requests"] == 2
    await a.aclose()
    await b.aclose()


async def test_a_failed_call_releases_its_hold(tmp_path: Path) -> None:
    backend = LimitBackend.from_url(f"sqlite:///{tmp_path / 'limits.db'}")
    hold, spent, held = await backend.reserve_budget("t", 1.0, 0.6, 30)
    assert hold is not None and (spent, held) == (0.0, 0.0)
    other, _, held = await backend.reserve_budget("t", 1.0, 0.6, 30)
    assert other is None and held == pytest.approx(0.6)
    await backend.settle_budget("t", hold, 0.0)
    assert await backend.budget_usage("t") == (0.0, 0.0)
    expiring, _, _ = await backend.reserve_budget("t", 1.0, 0.6, 0.05)  # its process died
    assert expiring is not None
    await asyncio.sleep(0.1)
    assert await backend.budget_usage("t") == (0.0, 0.0)
    await backend.aclose()


async def test_a_call_failing_without_usage_releases_its_hold(limits_url: str, sim: SimHandle) -> None:
    tenant = f"f-{uuid.uuid4().hex[:8]}"
    sim.configure(faults={"error_5xx": 1.0})
    g = gateway(limits_url, sim, {tenant: 1.0}, max_attempts=1)
    with pytest.raises(ProviderError) as info:
        await g.chat(req(tenant, 100))
    assert not isinstance(info.value, BudgetExceededError)
    assert await g.backend.budget_usage(tenant) == (0.0, 0.0)
    await g.aclose()


async def test_a_cancelled_call_releases_its_hold(limits_url: str, slow_sim: SimHandle) -> None:
    tenant = f"c-{uuid.uuid4().hex[:8]}"
    g = gateway(limits_url, slow_sim, {tenant: 1.0})
    task = asyncio.create_task(g.chat(req(tenant, 100)))
    await asyncio.sleep(0.15)
    spent, held = await g.backend.budget_usage(tenant)
    assert spent == 0.0 and held > 0  # in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert await g.backend.budget_usage(tenant) == (0.0, 0.0)
    await g.aclose()
