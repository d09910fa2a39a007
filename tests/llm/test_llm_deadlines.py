"""Adaptive first-token deadlines: the rule alone, then against the simulator's real hangs."""

from __future__ import annotations

import asyncio

import pytest

from storyloom.errors import ProviderTimeout
from storyloom.llm.deadlines import FirstTokenDeadline, TtftPolicy
from storyloom.llm.deployments import Deployment, GatewayConfig
from storyloom.llm.gateway import Gateway
from storyloom.llm.types import ChatRequest
from storyloom.sim import ModelProfile, SimConfig, run_sim_in_thread

POLICY = TtftPolicy(factor=3.0, percentile=0.99, floor_s=0.5, min_samples=20, window=100)


def test_the_cap_holds_until_enough_first_tokens_were_seen() -> None:
    d = FirstTokenDeadline(60.0, POLICY)
    for _ in range(19):
        d.observe(0.2, d.deadline_s())
    assert d.deadline_s() == 60.0
    d.observe(0.4, 60.0)
    assert d.deadline_s() == pytest.approx(1.2)  # 3 x the 99th percentile (0.4), above the floor
    assert FirstTokenDeadline(60.0, TtftPolicy(adaptive=False)).deadline_s() == 60.0


def test_floor_retries_and_cap() -> None:
    d = FirstTokenDeadline(3.0, POLICY)
    for _ in range(50):
        d.observe(0.05, 3.0)
    assert d.deadline_s(1) == 0.5  # the floor: 3 x 0.05 is too tight for any real provider
    assert d.deadline_s(2) == 1.0 and d.deadline_s(3) == 2.0  # each retry of a call waits twice as long
    assert d.deadline_s(4) == 3.0  # never beyond the configured ttft_timeout_s


def test_frequent_timeouts_widen_the_deadline_and_rare_ones_narrow_it_back() -> None:
    d = FirstTokenDeadline(60.0, POLICY)
    for _ in range(40):
        d.observe(0.2, 60.0)
    tight = d.deadline_s()
    for _ in range(20):  # the provider got slower for real: every attempt times out
        d.timed_out(tight)
    assert d.deadline_s() == pytest.approx(2 * tight)
    for _ in range(20):
        d.observe(0.2, d.deadline_s())
    assert d.deadline_s() == pytest.approx(tight)
    d2 = FirstTokenDeadline(60.0, POLICY)  # 2% hangs (the chaos profile) do not widen it
    for i in range(200):
        if i % 50 == 0:
            d2.timed_out(d2.deadline_s())
        else:
            d2.observe(0.2, d2.deadline_s())
    assert d2.deadline_s() == pytest.approx(0.6)


async def test_a_hung_call_costs_the_learnt_deadline_not_the_configured_one() -> None:
    sim_cfg = SimConfig(
        seed=5, default=ModelProfile(ttft_s=0.02, tokens_per_s=100_000.0, answer_tokens=30), hang_s=300
    )
    with run_sim_in_thread(sim_cfg) as sim:
        dep = Deployment(name="d1", model="m", base_url=sim.url, provider_model="m", ttft_timeout_s=120.0)
        msgs = [{"role": "user", "content": "Say something."}]

        async def learnt(max_attempts: int) -> Gateway:
            cfg = GatewayConfig(
                deployments=(dep,),
                default_model="m",
                backoff_base_s=0.01,
                max_attempts=max_attempts,
                ttft=TtftPolicy(floor_s=0.3, min_samples=20),
            )
            g = Gateway(cfg)
            for _ in range(25):  # learn how fast this provider's first tokens are
                await g.chat(ChatRequest(model="m", messages=msgs))
            return g

        g = await learnt(2)
        sim.configure(faults={"hang": 1.0})
        # A hang-bound only: with the configured 120 s deadline this call would take four minutes.
        async with asyncio.timeout(30):
            with pytest.raises(ProviderTimeout) as info:
                await g.chat(ChatRequest(model="m", messages=msgs))
        assert info.value.phase == "ttft"
        assert "within 0.60 s" in str(info.value)  # the second attempt: twice the floor of 0.3 s
        assert sim.stats()["faults"]["hang"] == 2
        await g.aclose()
        sim.configure(faults={"hang": 0.0})
        g = await learnt(6)
        sim.configure(faults={"hang": 0.25})
        async with asyncio.timeout(60):
            results = await asyncio.gather(
                *[g.chat(ChatRequest(model="m", messages=msgs)) for _ in range(20)], return_exceptions=True
            )
        await g.aclose()
        hangs = sim.stats()["faults"]["hang"] - 2
    assert hangs >= 2 and all(not isinstance(r, BaseException) for r in results), results
