"""The tool runtime's policy: cache, retries, timeout, breaker with one probe, limits, degraded answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from storyloom.tools import (
    Tool,
    ToolArgumentsError,
    ToolCallMeta,
    ToolError,
    ToolNotFoundError,
    ToolPolicy,
    ToolRegistry,
    ToolRuntime,
    tool,
    tool_breaker,
)


class Q(BaseModel):
    q: str


class Flaky:
    """A tool implementation whose answers the test scripts: 'ok', 'fail', 'hang', '429', 'refuse'."""

    def __init__(self, script: list[str] | None = None, default: str = "ok") -> None:
        self.script = list(script or [])
        self.default = default
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, args: Q) -> dict[str, Any]:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            step = self.script.pop(0) if self.script else self.default
            if step == "hang":
                await asyncio.sleep(30)
            if step == "slow":
                await asyncio.sleep(0.05)
            if step == "fail":
                raise ToolError("upstream 503")
            if step == "429":
                raise ToolError("slow down", rate_limited=True, retry_after_s=0.05)
            if step == "refuse":
                raise ToolError("bad query", transient=False)
            return {"answer": args.q.upper(), "n": self.calls}
        finally:
            self.in_flight -= 1


def _runtime(impl: Flaky, url: str = "memory://", **policy: Any) -> ToolRuntime:
    defaults: dict[str, Any] = {"timeout_s": 0.3, "retries": 1, "backoff_s": 0.01}
    defaults.update(policy)
    t = Tool(name="probe", input=Q, fn=impl, description="a test tool", policy=ToolPolicy(**defaults))
    return ToolRuntime(ToolRegistry([t]), limits_url=url)


async def test_an_answer_is_ok_and_then_cached_by_its_normalized_input() -> None:
    impl = Flaky()
    rt = _runtime(impl, cache_ttl_s=60)
    try:
        first = await rt.call("probe", {"q": "rust  async"})
        again = await rt.call("probe", {"q": "  rust async "})
        other = await rt.call("probe", {"q": "python"})
    finally:
        await rt.aclose()
    assert (first.degraded, first.cached, first.outcome) == (False, False, "ok")
    assert first.output == {"answer": "RUST  ASYNC", "n": 1}
    assert again.cached and again.output == first.output and again.outcome == "cached"
    assert not other.cached and impl.calls == 2
    assert rt.cache.hits == 1


async def test_a_transient_failure_is_retried_and_then_answers() -> None:
    impl = Flaky(["fail"])
    rt = _runtime(impl)
    try:
        result = await rt.call("probe", {"q": "x"})
    finally:
        await rt.aclose()
    assert not result.degraded and result.attempts == 2 and impl.calls == 2


@pytest.mark.parametrize(
    ("script", "reason", "calls"),
    [
        (["fail", "fail"], "failed: upstream 503", 2),
        (["hang", "hang"], "timeout", 2),
        (["refuse"], "failed: bad query", 1),  # the API's refusal of this input is not retried
        (["429", "429"], "rate_limited", 2),
    ],
)
async def test_a_call_that_fails_for_good_answers_degraded_not_an_error(
    script: list[str], reason: str, calls: int
) -> None:
    impl = Flaky(script)
    rt = _runtime(impl)
    try:
        result = await rt.call("probe", {"q": "x"})
    finally:
        await rt.aclose()
    assert result.degraded and result.outcome == "degraded"
    assert result.reason is not None and result.reason.startswith(reason)
    assert result.output["degraded"] is True  # the policy's default degraded answer
    assert impl.calls == calls


async def test_a_stale_cached_answer_stands_in_when_the_tool_is_down() -> None:
    impl = Flaky(["ok", "fail", "fail"])
    rt = _runtime(impl, cache_ttl_s=0.05)
    try:
        fresh = await rt.call("probe", {"q": "x"})
        await asyncio.sleep(0.08)
        stale = await rt.call("probe", {"q": "x"})
    finally:
        await rt.aclose()
    assert stale.degraded and stale.cached and stale.output == fresh.output
    assert stale.reason is not None and "cached result" in stale.reason


async def test_the_breaker_opens_answers_degraded_at_once_and_closes_after_one_good_probe() -> None:
    impl = Flaky(default="fail")
    breaker = tool_breaker(minimum_calls=4, open_s=0.3, max_open_s=0.3)
    rt = _runtime(impl, retries=0, breaker=breaker)
    try:
        for _ in range(4):
            assert (await rt.call("probe", {"q": "x"})).degraded
        assert (await rt.breaker_states())["probe"] == "open"
        calls = impl.calls
        t0 = time.monotonic()
        shut = await rt.call("probe", {"q": "x"})
        assert shut.reason == "breaker_open" and time.monotonic() - t0 < 0.1
        assert impl.calls == calls  # not sent while open
        await asyncio.sleep(0.5)  # open_s with its jitter (≤ 1.5 ×) is over: half-open
        impl.default = "slow"
        probe, other = await asyncio.gather(rt.call("probe", {"q": "a"}), rt.call("probe", {"q": "b"}))
        # One probe goes out; the call beside it is answered degraded without waiting for it.
        assert sorted([probe.degraded, other.degraded]) == [False, True]
        assert "breaker_open" in {probe.reason, other.reason}
        assert (await rt.breaker_states())["probe"] == "closed"
        assert not (await rt.call("probe", {"q": "c"})).degraded
    finally:
        await rt.aclose()


async def test_concurrency_is_capped_and_a_wait_past_max_wait_degrades() -> None:
    impl = Flaky(default="slow")
    rt = _runtime(impl, max_concurrency=2, max_wait_s=10)
    try:
        results = await asyncio.gather(*(rt.call("probe", {"q": str(i)}) for i in range(8)))
        assert not any(r.degraded for r in results)
        assert impl.max_in_flight == 2
    finally:
        await rt.aclose()
    impl = Flaky(default="hang")
    rt = _runtime(impl, max_concurrency=1, max_wait_s=0.1, timeout_s=1.0, retries=0)
    try:
        first, second = await asyncio.gather(rt.call("probe", {"q": "a"}), rt.call("probe", {"q": "b"}))
    finally:
        await rt.aclose()
    assert second.degraded and second.reason == "limit_wait"
    assert first.degraded and first.reason is not None and first.reason.startswith("timeout")


async def test_calls_per_minute_is_a_shared_limit_in_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'limits.db'}"
    a, b = Flaky(), Flaky()
    # A bucket of 10 at once (burst 0.5 of 20/min), refilled at 10 per 61 s: 10 of 12 calls now.
    one = _runtime(a, url, calls_per_minute=20, burst=0.5, max_wait_s=0.05)
    two = _runtime(b, url, calls_per_minute=20, burst=0.5, max_wait_s=0.05)  # another process
    try:
        results = [await rt.call("probe", {"q": str(i)}) for i in range(6) for rt in (one, two)]
    finally:
        await one.aclose()
        await two.aclose()
    admitted = [r for r in results if not r.degraded]
    assert a.calls + b.calls == len(admitted) == 10
    assert a.calls > 0 and b.calls > 0
    assert {r.reason for r in results if r.degraded} == {"limit_wait"}


async def test_the_callers_mistakes_raise_and_everything_else_degrades() -> None:
    rt = _runtime(Flaky())
    try:
        with pytest.raises(ToolNotFoundError, match="no tool named 'nope'"):
            await rt.call("nope", {})
        with pytest.raises(ToolArgumentsError, match="q: Field required"):
            await rt.call("probe", {})
        assert not (await rt.call("probe", {"q": "x"}, ToolCallMeta(tenant="t", priority=9))).degraded
    finally:
        await rt.aclose()


def test_the_decorator_reads_the_input_model_and_the_docstring() -> None:
    @tool(policy=ToolPolicy(cache_ttl_s=600))
    async def lookup(args: Q) -> dict[str, str]:
        """Look a word up.

        More text that is not the description."""
        return {"q": args.q}

    assert lookup.name == "lookup" and lookup.input is Q and lookup.description == "Look a word up."
    spec = lookup.spec()
    assert spec["type"] == "function" and spec["function"]["name"] == "lookup"
    assert spec["function"]["parameters"]["required"] == ["q"]


async def test_waiters_go_by_priority_then_tenant_fair_share() -> None:
    order: list[str] = []

    async def slow(args: Q) -> dict[str, str]:
        order.append(args.q)
        await asyncio.sleep(0.02)
        return {"q": args.q}

    t = Tool(name="one_at_a_time", input=Q, fn=slow, policy=ToolPolicy(max_concurrency=1, max_wait_s=30))
    rt = ToolRuntime(ToolRegistry([t]))
    try:
        calls = [rt.call("one_at_a_time", {"q": f"a{i}"}, ToolCallMeta(tenant="a")) for i in range(6)]
        first = asyncio.gather(*calls)
        await asyncio.sleep(0.01)  # tenant a's six are queued (one running)
        late = [rt.call("one_at_a_time", {"q": f"b{i}"}, ToolCallMeta(tenant="b")) for i in range(2)]
        urgent = rt.call("one_at_a_time", {"q": "urgent"}, ToolCallMeta(tenant="a", priority=9))
        await asyncio.gather(first, *late, urgent)
    finally:
        await rt.aclose()
    assert order[0] == "a0" and order[1] == "urgent"  # priority first
    # Then tenant b's calls are not stuck behind all of a's: fair share interleaves them.
    assert order.index("b1") < order.index("a5")


async def test_metrics_count_outcomes_cache_lookups_waits_and_the_breaker() -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    impl = Flaky(["ok", "fail"])
    t = Tool(
        name="metered",
        input=Q,
        fn=impl,
        policy=ToolPolicy(timeout_s=0.3, retries=0, cache_ttl_s=60, breaker=tool_breaker(minimum_calls=1)),
    )
    rt = ToolRuntime(ToolRegistry([t]))
    before = {
        o: value("storyloom_tool_calls_total", tool="metered", outcome=o)
        for o in ("ok", "cached", "degraded")
    }
    try:
        await rt.call("metered", {"q": "a"})
        await rt.call("metered", {"q": "a"})
        await rt.call("metered", {"q": "b"})  # fails: degraded, and the breaker (1 call minimum) opens
        with pytest.raises(ToolArgumentsError):
            await rt.call("metered", {})
        await rt._refresh_gauges_once()
    finally:
        await rt.aclose()
    for outcome in ("ok", "cached", "degraded"):
        assert value("storyloom_tool_calls_total", tool="metered", outcome=outcome) == before[outcome] + 1
    assert value("storyloom_tool_calls_total", tool="metered", outcome="failed") >= 1
    assert value("storyloom_tool_cache_lookups_total", tool="metered", result="hit") >= 1
    assert value("storyloom_tool_limit_wait_seconds_count", tool="metered") >= 2
    assert value("storyloom_tool_latency_seconds_count", tool="metered") >= 3
    assert value("storyloom_tool_breaker_state", tool="metered") == 2  # open
