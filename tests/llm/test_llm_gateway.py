"""The gateway against the simulator (and a byte-exact fake) over loopback HTTP."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse, Response

from storyloom.config import Settings
from storyloom.errors import (
    BadRequestError,
    BudgetExceededError,
    ConfigError,
    ProviderTimeout,
    ProviderUnavailable,
    StreamCutError,
)
from storyloom.limits.state import BreakerPolicy
from storyloom.llm.deployments import Deployment, GatewayConfig, load_gateway_config
from storyloom.llm.factory import build_client
from storyloom.llm.gateway import Gateway
from storyloom.llm.types import CallMeta, ChatRequest, ModelClient
from storyloom.sim import ModelProfile, SimConfig, SimHandle, run_sim_in_thread

sys.path.insert(0, str(Path(__file__).parent))
from _fake_provider import chunk, serve, sse

MSGS = [{"role": "user", "content": "Write the next scene of the story."}]


def dep(url: str, name: str = "d1", model: str = "m", **kw: Any) -> Deployment:
    return Deployment(
        name=name, model=model, base_url=url, provider_model=kw.pop("provider_model", model), **kw
    )


def gw(*deps: Deployment, **kw: Any) -> Gateway:
    kw.setdefault("backoff_base_s", 0.01)
    return Gateway(GatewayConfig(deployments=deps, default_model=deps[0].model, **kw))


def req(model: str = "m", **kw: Any) -> ChatRequest:
    meta = CallMeta(
        **{k: kw.pop(k) for k in ("tenant", "priority", "job_id", "step", "variant", "deadline_s") if k in kw}
    )
    return ChatRequest(model=model, messages=kw.pop("messages", MSGS), meta=meta, **kw)


@pytest.fixture
def slow_sim() -> Iterator[SimHandle]:
    """Answers take ~0.3 s, so calls overlap and queues form."""
    with run_sim_in_thread(
        SimConfig(default=ModelProfile(latency_s=0.3, ttft_s=0.02, answer_tokens=40))
    ) as s:
        yield s


async def test_build_client_gives_the_gateway_and_records_the_ledger(sim: SimHandle) -> None:
    client = build_client(Settings(profile="sim", rpm=1000, limits_url="memory://"), sim_url=sim.url)
    assert isinstance(client, Gateway) and isinstance(client, ModelClient)
    deltas: list[str] = []
    r = await client.chat(req("sim-writer", job_id="j1", step="plot", tenant="acme"), deltas.append)
    await client.aclose()
    assert r.text and "".join(deltas) == r.text and r.deployment == "sim" and r.attempts == 1
    assert r.cost_usd > 0  # sim-writer is priced in prices.json
    led = client.ledger
    for dim, key in [
        ("tenant", "acme"),
        ("job", "j1"),
        ("step", "j1/plot"),
        ("model", "sim-writer"),
        ("deployment", "sim"),
    ]:
        t = led.total(dim, key)
        assert (
            t.calls == 1
            and t.prompt_tokens == r.usage.prompt_tokens
            and t.cost_usd == pytest.approx(r.cost_usd)
        )


def test_deployments_document_and_bad_config(tmp_path: Path) -> None:
    doc = tmp_path / "deps.yaml"
    doc.write_text(
        "deployments:\n"
        "  - {model: writer, name: k1, base_url: 'http://a/v1', rpm: 10, weight: 2}\n"
        "  - {model: writer, name: k2, base_url: 'http://b/v1', provider_model: deepseek-chat}\n"
        "fallbacks: {writer: [local]}\n"
        "tenants: {alice: {weight: 2, budget_usd: 1.5}}\n"
        "gateway: {lease_ttl_s: 10, breaker: {minimum_calls: 3, half_open_calls: 2, ramp_s: 0},\n"
        "          ttft: {floor_s: 1.5, factor: 4}}\n"
    )
    cfg = load_gateway_config(Settings(deployments=str(doc), data_dir=tmp_path))
    assert [d.name for d in cfg.for_model("writer")] == ["k1", "k2"]
    assert cfg.for_model("writer")[1].provider_model == "deepseek-chat"
    assert cfg.fallbacks == {"writer": ("local",)} and cfg.tenant_weights == {"alice": 2.0}
    assert cfg.tenant_budgets_usd == {"alice": 1.5} and cfg.breaker.minimum_calls == 3
    assert cfg.breaker.half_open_calls == 2 and cfg.breaker.ramp_s == 0
    assert cfg.ttft.floor_s == 1.5 and cfg.ttft.factor == 4 and cfg.ttft.adaptive
    assert cfg.limits_url.startswith("sqlite:///")  # limits configured: shared by the machine's processes
    # an unknown model rides the default model's deployments (same keys, same limits)
    assert [(d.name, d.provider_model) for d in cfg.for_model("quality")] == [
        ("k1", "quality"),
        ("k2", "quality"),
    ]
    with pytest.raises(ConfigError, match="rpm"):
        load_gateway_config(Settings(deployments='[{"model": "x", "base_url": "http://a", "rpm": 0}]'))
    with pytest.raises(ConfigError, match="min_failures"):  # the streak rule is gone: say so
        load_gateway_config(Settings(deployments="{gateway: {breaker: {min_failures: 3}}}"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_gateway_config(Settings(deployments=str(tmp_path / "missing.yaml")))
    with pytest.raises(ConfigError, match="sim_url"):
        load_gateway_config(Settings(profile="sim"))


async def test_concurrency_limit_is_never_exceeded_and_leases_are_returned(slow_sim: SimHandle) -> None:
    slow_sim.configure(quota={"concurrency": 3, "mode": "enforce"})
    g = gw(dep(slow_sim.url, max_concurrency=3))
    await asyncio.gather(*[g.chat(req()) for _ in range(12)])
    stats = slow_sim.stats()
    snap = await g.backend.snapshot(["d1"])
    await g.aclose()
    assert stats["max_concurrency"] == 3 and stats["rejected_429_total"] == 0 and stats["admitted"] == 12
    assert snap["d1"]["leases"] == {}


async def test_rpm_is_smooth_and_never_over_quota_in_any_window(sim: SimHandle) -> None:
    # 30 requests per 2 s window, counted (not refused) by the simulator: any overshoot shows.
    sim.configure(quota={"rpm": 30, "mode": "count"}, window_s=2.0)
    g = gw(dep(sim.url, rpm=30, window_s=2.0))
    t0 = time.monotonic()
    await asyncio.gather(*[g.chat(req()) for _ in range(60)])
    elapsed = time.monotonic() - t0
    await g.aclose()
    w = sim.stats()["window"]
    assert w["over_quota_admitted"] == 0 and w["max_window_requests"] <= 30
    # 60 calls at (30 - 1) / (2 s + 1 s jitter allowance) = 9.7/s after a burst of 1: about 6 s,
    # where an unlimited or fixed-window client would take 2 s
    assert 4.5 < elapsed < 12


async def test_tpm_reserves_prompt_plus_max_tokens_before_the_call(sim: SimHandle) -> None:
    sim.configure(quota={"tpm": 2000, "mode": "count"}, window_s=2.0)
    g = gw(dep(sim.url, tpm=2000, window_s=2.0), headroom=0.1)
    await asyncio.gather(*[g.chat(req(max_tokens=150)) for _ in range(22)])
    await g.aclose()
    w = sim.stats()["window"]
    assert w["over_quota_admitted"] == 0 and w["max_window_tokens"] <= 2000
    assert w["max_window_tokens"] > 1200  # and the quota is actually used


async def test_cancelled_callers_return_their_leases_at_once(slow_sim: SimHandle) -> None:
    g = gw(dep(slow_sim.url, max_concurrency=2), lease_ttl_s=60)
    tasks = [asyncio.create_task(g.chat(req())) for _ in range(6)]
    await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.05)
    snap = await g.backend.snapshot(["d1"])
    assert snap["d1"]["leases"] == {}  # not after 60 s: now
    r = await g.chat(req())
    await g.aclose()
    assert r.text


async def test_priority_goes_first_and_tenants_share_by_weight(slow_sim: SimHandle) -> None:
    g = gw(dep(slow_sim.url, max_concurrency=1), tenant_weights={"a": 1, "b": 2, "c": 1})
    order: list[str] = []

    async def call(tag: str, **kw: Any) -> None:
        await g.chat(req(**kw))
        order.append(tag)

    blocker = asyncio.create_task(call("first"))
    await asyncio.sleep(0.05)
    tasks = [asyncio.create_task(call(f"low-{t}", tenant=t, priority=1)) for t in "abc" for _ in range(4)]
    await asyncio.sleep(0.02)
    tasks.append(asyncio.create_task(call("high", tenant="a", priority=9)))
    await asyncio.gather(blocker, *tasks)
    await g.aclose()
    assert order[0] == "first" and order[1] == "high"
    # stride over equal costs: in the first 8 low calls b gets twice the share of a and of c
    first8 = order[2:10]
    assert first8.count("low-b") == 4 and first8.count("low-a") == 2 and first8.count("low-c") == 2


async def test_queue_deadline(slow_sim: SimHandle) -> None:
    g = gw(dep(slow_sim.url, max_concurrency=1))
    first = asyncio.create_task(g.chat(req()))
    await asyncio.sleep(0.02)
    with pytest.raises(ProviderTimeout) as info:
        await g.chat(req(deadline_s=time.monotonic() + 0.1))
    assert info.value.phase == "queue"
    await first
    await g.aclose()


async def test_retries_honour_retry_after_and_stop_on_bad_request() -> None:
    calls: list[float] = []

    async def flaky(body: dict[str, Any]) -> Response:
        calls.append(time.monotonic())
        if body["messages"][0]["content"] == "bad":
            return JSONResponse({"error": "no"}, status_code=400)
        if len(calls) == 1:
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"retry-after-ms": "400"})
        if len(calls) == 2:
            return JSONResponse({"error": "boom"}, status_code=503)
        return sse([chunk("ok"), chunk(finish="stop"), "[DONE]"])

    async with serve(flaky) as (url, _):
        g = gw(dep(url))
        r = await g.chat(req())
        assert r.text == "ok" and r.attempts == 3
        assert calls[1] - calls[0] >= 0.39  # Retry-After honoured, not the 10 ms backoff
        calls.clear()
        with pytest.raises(BadRequestError):
            await g.chat(req(messages=[{"role": "user", "content": "bad"}]))
        assert len(calls) == 1
        assert g.counts["rate_limited"] == 1
        await g.aclose()


async def test_attempts_are_capped_and_a_stalled_first_token_is_retried() -> None:
    seen: list[int] = []

    async def down(body: dict[str, Any]) -> Response:
        seen.append(1)
        return JSONResponse({"error": "down"}, status_code=500)

    async with serve(down) as (url, _):
        g = gw(dep(url), max_attempts=3)
        with pytest.raises(ProviderUnavailable):
            await g.chat(req())
        assert len(seen) == 3
        await g.aclose()

    n: list[int] = []

    async def stall_once(body: dict[str, Any]) -> Response:
        n.append(1)
        return sse([chunk("fine"), chunk(finish="stop")], first_delay_s=3.0 if len(n) == 1 else 0.0)

    async with serve(stall_once) as (url, _):
        g = gw(dep(url, ttft_timeout_s=0.3))
        r = await g.chat(req())
        assert r.text == "fine" and r.attempts == 2
        await g.aclose()


async def test_after_the_first_token_a_failure_is_final(sim: SimHandle) -> None:
    sim.configure(faults={"stream_cut": 1.0})
    g = gw(dep(sim.url), fallbacks={"m": ("other",)})
    got: list[str] = []
    with pytest.raises(StreamCutError) as info:
        await g.chat(req(), got.append)
    await g.aclose()
    assert got and info.value.partial_text == "".join(got)
    assert sim.stats()["requests"] == 1  # no retry, no switch to the fallback


async def test_fallback_chain_before_the_first_token(sim: SimHandle) -> None:
    with run_sim_in_thread(SimConfig(faults={"error_5xx": 1.0})) as broken:
        g = gw(
            dep(broken.url, name="primary", model="m"),
            dep(sim.url, name="backup", model="b"),
            fallbacks={"m": ("b",)},
            max_attempts=2,
        )
        r = await g.chat(req())
        await g.aclose()
        assert r.deployment == "backup" and broken.stats()["requests"] == 2
    assert g.counts["fallbacks"] == 1


async def test_breaker_moves_traffic_probes_a_few_and_ramps_back(sim: SimHandle) -> None:
    policy = BreakerPolicy(
        minimum_calls=5, window_s=60, open_s=0.5, max_open_s=1, half_open_calls=2, ramp_s=0.5
    )
    with run_sim_in_thread(SimConfig(faults={"error_5xx": 1.0})) as bad:
        g = gw(dep(bad.url, name="bad"), dep(sim.url, name="good"), breaker=policy)
        results = await asyncio.gather(*[g.chat(req()) for _ in range(20)])
        tripped_at = bad.stats()["requests"]  # the calls already in flight when it tripped also failed
        assert all(r.deployment == "good" for r in results) and 5 <= tripped_at <= 20
        await asyncio.gather(*[g.chat(req()) for _ in range(20)])
        assert bad.stats()["requests"] == tripped_at  # open: everything goes to the good one
        await asyncio.sleep(0.8)
        before = bad.stats()["requests"]
        await asyncio.gather(*[g.chat(req()) for _ in range(20)])
        probes = bad.stats()["requests"] - before
        assert 1 <= probes <= policy.half_open_calls  # half-open: at most 2 probes, they failed
        bad.configure(faults={"error_5xx": 0.0})
        await asyncio.sleep(1.6)
        await asyncio.gather(*[g.chat(req()) for _ in range(4)])  # good probes close it
        await asyncio.sleep(policy.ramp_s)  # the ramp back to its full share
        await asyncio.gather(*[g.chat(req()) for _ in range(20)])
        assert bad.stats()["completed"] >= 5  # traffic came back
        snap = (await g.backend.snapshot(["bad"]))["bad"]
        await g.aclose()
    assert snap["br"]["state"] == "closed" and snap["br"]["opens"] >= 2


async def test_fast_failures_do_not_open_the_breaker_while_good_calls_stream() -> None:
    # Issue 10: 5xx answers come back at once, good ones after seconds. 30% of calls fail; by
    # completion order the first outcomes are all failures, which tripped the old breaker.
    with run_sim_in_thread(
        SimConfig(seed=3, default=ModelProfile(latency_s=0.5, ttft_s=0.05), faults={"error_5xx": 0.3})
    ) as flaky:
        g = gw(dep(flaky.url), breaker=BreakerPolicy(minimum_calls=5), max_attempts=6)
        results = await asyncio.gather(*[g.chat(req()) for _ in range(60)])
        snap = (await g.backend.snapshot(["d1"]))["d1"]
        await g.aclose()
        faults = flaky.stats()["faults"]["error_5xx"]
    assert all(r.text for r in results) and faults >= 10
    assert snap["br"]["opens"] == 0


async def test_cache_keys_by_variant_and_is_off_for_sampled_calls(sim: SimHandle) -> None:
    g = gw(dep(sim.url), cache_ttl_s=60)
    a = await g.chat(req(temperature=0.0))
    b = await g.chat(req(temperature=0.0))
    assert b.cached and b.text == a.text and sim.stats()["requests"] == 1
    await g.chat(req(temperature=0.9))
    await g.chat(req(temperature=0.9))
    assert sim.stats()["requests"] == 3  # sampled and unkeyed: never cached
    v1 = await g.chat(req(temperature=0.9, variant=1))
    v1b = await g.chat(req(temperature=0.9, variant=1))
    await g.chat(req(temperature=0.9, variant=2))
    await g.aclose()
    assert v1b.cached and v1b.text == v1.text and sim.stats()["requests"] == 5


async def test_tenant_budget_is_reserved_before_concurrent_calls(sim: SimHandle) -> None:
    # each call's worst case is ~ (prompt + 1000 output tokens) * $1.10/M ≈ $0.0011: a $0.003 budget
    # lets at most 2 run at once even though all 6 start together with nothing spent yet.
    g = gw(dep(sim.url, model="sim-writer"), tenant_budgets_usd={"t": 0.003})
    results = await asyncio.gather(
        *[g.chat(req("sim-writer", tenant="t", max_tokens=1000)) for _ in range(6)], return_exceptions=True
    )
    await g.aclose()
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert 1 <= len(ok) <= 2
    assert all(isinstance(r, BudgetExceededError) for r in results if isinstance(r, BaseException))
    assert g.ledger.total("tenant", "t").cost_usd <= 0.003


async def test_adaptive_limit_backs_off_on_429s(sim: SimHandle) -> None:
    sim.configure(faults={"error_429": 0.5})
    g = gw(dep(sim.url, max_concurrency=16), max_attempts=10)
    await asyncio.gather(*[g.chat(req()) for _ in range(12)])
    limit = g._limit(g.config.deployments[0]).limit
    await g.aclose()
    assert limit is not None and limit < 16


async def test_metrics_are_exported(sim: SimHandle) -> None:
    from prometheus_client import REGISTRY, generate_latest

    g = gw(dep(sim.url, name="metrics-dep", max_concurrency=4), lease_ttl_s=0.3)
    await g.chat(req(tenant="m-tenant"))
    await asyncio.sleep(0.3)  # the renewer refreshes the breaker gauges every lease_ttl_s / 3
    await g.aclose()
    text = generate_latest(REGISTRY).decode()
    for name in (
        "storyloom_llm_queue_wait_seconds",
        "storyloom_llm_in_flight",
        "storyloom_llm_tokens_total",
        "storyloom_llm_adaptive_limit",
        "storyloom_llm_upstream_requests_total",
    ):
        assert name in text
    assert 'storyloom_llm_tokens_total{kind="prompt",model="m",tenant="m-tenant"}' in text
    assert 'storyloom_llm_breaker_opens{deployment="metrics-dep"} 0.0' in text
    assert 'storyloom_llm_breaker_state{deployment="metrics-dep"} 0.0' in text
