"""`ToolRuntime`: every tool call goes cache → admission → shared limits → the tool, once.

    call(name, arguments, meta)
      validate the arguments (ToolArgumentsError; unknown name: ToolNotFoundError)
      fresh cache hit? ───────────────────────────────────────────────► ToolResult(cached)
      retry loop (1 + retries attempts, backoff, Retry-After):
        AdmissionQueue(tool).admit    priority, tenant fair share, wait ≤ max_wait_s / deadline
          LimitBackend.acquire        lease under max_concurrency + 1 call of calls_per_minute,
                                      breaker (one half-open probe); shared by every process
        tool.fn(args) within timeout_s
        LimitBackend.release          breaker outcome; a 429 pauses the tool for every process
      success: cache it ──────────────────────────────────────────────► ToolResult(ok)
      breaker open / wait past the deadline / failed for good:
        a stale cached answer if any, else the policy's degraded answer ► ToolResult(degraded)

A tool's limits live in the same `LimitBackend` as the LLM gateway's deployments (a document named
`tool:<name>`: memory, SQLite file or Redis by URL), so N workers on M machines together never
exceed `calls_per_minute` nor hold more than `max_concurrency` calls. One backend per distinct
breaker policy (the backend applies its policy to every document it holds); they share the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp

from storyloom import tracing
from storyloom.errors import CircuitOpenError, ProviderError, ProviderTimeout, RateLimitError
from storyloom.eventloop import cancel_all
from storyloom.limits.base import LimitBackend
from storyloom.limits.breaker import BreakerPolicy
from storyloom.limits.state import Ask, Claim, Grant, Outcome, breaker_state
from storyloom.llm.admission import AdmissionQueue
from storyloom.tools.base import Tool, ToolCallMeta, ToolError, ToolResult
from storyloom.tools.cache import CacheEntry, ToolCache, normalized_key
from storyloom.tools.metrics import tool_metrics
from storyloom.tools.registry import ToolRegistry
from storyloom.tools.shared_cache import SharedCache, shared_cache

__all__ = ["ToolRuntime", "limit_name"]

log = logging.getLogger(__name__)
_BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}


def limit_name(tool: str) -> str:
    """The tool's document in the shared limit backend (beside the gateway's deployments)."""
    return f"tool:{tool}"


class _Degrade(Exception):
    """Internal: the call cannot get an answer; `reason` says why (breaker_open, limit_wait, ...)."""

    def __init__(self, reason: str, attempts: int = 0, waited: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.waited = waited


class ToolRuntime:
    """One per process (per event loop): the tools' queues, cache and limit backends."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        limits_url: str = "memory://",
        tenant_weights: dict[str, float] | None = None,
        max_queue: int = 100_000,
        cache: ToolCache | None = None,
        shared: SharedCache | bool | None = True,
        prepare: Callable[[ToolRegistry], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.registry = registry
        # Run once before the first call (connecting MCP servers, which needs the running loop).
        self._prepare = prepare
        self._prepared: asyncio.Task[None] | None = None
        self.limits_url = limits_url
        self.tenant_weights = dict(tenant_weights or {})
        self.max_queue = max_queue
        self.cache = cache or ToolCache()
        # The cache's second level, shared by every process (True: where the limits are).
        self.shared: SharedCache | None = shared_cache(limits_url) if shared is True else shared or None
        self.metrics = tool_metrics()
        self._backends: dict[BreakerPolicy, LimitBackend] = {}
        self._queues: dict[str, AdmissionQueue] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._gauges: asyncio.Task[None] | None = None
        self._used: set[str] = set()
        self._closed = False

    # -- the call --------------------------------------------------------------------------------

    async def call(
        self, name: str, arguments: dict[str, Any] | None = None, meta: ToolCallMeta | None = None
    ) -> ToolResult:
        """One tool call under its policy. Raises only for the caller's mistakes (unknown tool,
        invalid arguments); every failure of the tool itself is a degraded result."""
        if not tracing.enabled():
            return await self._call(name, arguments, meta)
        with tracing.tool_call(name) as span:
            result = await self._call(name, arguments, meta)
            span.set_attribute("storyloom.tool.cached", result.cached)
            span.set_attribute("storyloom.tool.degraded", result.degraded)
            return result

    async def _call(
        self, name: str, arguments: dict[str, Any] | None, meta: ToolCallMeta | None
    ) -> ToolResult:
        meta = meta or ToolCallMeta()
        if self._prepare is not None:
            await self.ready()
        tool = self.registry.get(name)
        try:
            args = tool.parse(arguments or {})
        except Exception:
            self.metrics.calls.labels(name, "failed").inc()
            raise
        start = time.monotonic()
        self._used.add(name)
        if self._gauges is None:
            self._gauges = asyncio.get_running_loop().create_task(self._refresh_gauges(), name="tool-gauges")
        policy = tool.policy
        key = normalized_key(name, args) if policy.cache_ttl_s > 0 else None
        elsewhere: CacheEntry | None = None  # the shared level's entry, fresh or stale
        if key is not None:
            hit = self.cache.get(key)
            if hit is None and self.shared is not None:
                elsewhere = await self.shared.get(key)
                now = time.time()
                if elsewhere is not None and elsewhere.fresh_until > now:
                    hit = elsewhere.output
                    self.cache.put(key, hit, elsewhere.fresh_until - now)
            self.metrics.cache_lookups.labels(name, "miss" if hit is None else "hit").inc()
            if hit is not None:
                return self._done(ToolResult(tool=name, output=hit, cached=True), start)
        try:
            output, attempts, waited = await self._attempts(tool, args, meta, start)
        except _Degrade as d:
            return self._done(
                self._degraded(tool, args, key, d.reason, d.attempts, d.waited, elsewhere), start
            )
        if key is not None:
            self.cache.put(key, output, policy.cache_ttl_s)
            if self.shared is not None:
                await self.shared.put(key, output, policy.cache_ttl_s)
        return self._done(ToolResult(tool=name, output=output, attempts=attempts, wait_s=waited), start)

    async def call_many(
        self, calls: Sequence[tuple[str, dict[str, Any]]], meta: ToolCallMeta | None = None
    ) -> list[ToolResult]:
        """Several calls at once, results in order (each under its own tool's limits)."""
        return list(await asyncio.gather(*(self.call(n, a, meta) for n, a in calls)))

    async def ready(self) -> None:
        """Run the `prepare` hook once (concurrent first calls share it; a failure is retried)."""
        if self._prepare is None:
            return
        if self._prepared is None or (self._prepared.done() and self._prepared.exception() is not None):
            self._prepared = asyncio.get_running_loop().create_task(self._prepare(self.registry))
        await asyncio.shield(self._prepared)

    # -- pieces ----------------------------------------------------------------------------------

    async def _attempts(
        self, tool: Tool[Any], args: Any, meta: ToolCallMeta, start: float
    ) -> tuple[Any, int, float]:
        policy = tool.policy
        queue = self._queue(tool)
        backend = self._backend(policy.breaker)
        ask = self._ask(tool)
        attempt = 0
        waited = 0.0
        while True:
            wait_until = time.monotonic() + policy.max_wait_s
            if meta.deadline_s is not None:
                wait_until = min(wait_until, meta.deadline_s)
            try:
                admitted = await queue.admit(meta.tenant, meta.priority, 1.0, wait_until)
            except CircuitOpenError:
                raise _Degrade("breaker_open", attempt, waited) from None
            except ProviderTimeout:
                self.metrics.limit_wait.labels(tool.name).observe(time.monotonic() - start)
                raise _Degrade("limit_wait", attempt, waited) from None
            except RateLimitError:
                raise _Degrade("queue_full", attempt, waited) from None
            self.metrics.limit_wait.labels(tool.name).observe(admitted.wait_s)
            waited += admitted.wait_s
            attempt += 1
            grant = admitted.grant
            timeout_s = policy.timeout_s
            if meta.deadline_s is not None:
                timeout_s = min(timeout_s, max(0.001, meta.deadline_s - time.monotonic()))
            try:
                async with asyncio.timeout(timeout_s):
                    output = await tool.fn(args)
            except Exception as exc:  # a failing tool degrades the answer, never the job
                if not isinstance(exc, ToolError | TimeoutError | aiohttp.ClientError | OSError | ValueError):
                    log.exception("tool %s raised an unexpected error; answering degraded", tool.name)
                outcome, transient, retry_after = _classify(exc)
                self.metrics.attempts.labels(tool.name, outcome.kind).inc()
                await self._release(backend, ask, grant, outcome, tool.name)
                reason = _reason(exc, timeout_s)
                if not transient or attempt > policy.retries:
                    raise _Degrade(reason, attempt, waited) from None
                delay = max(
                    retry_after or 0.0, policy.backoff_s * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                )
                limit_at = start + policy.timeout_s * (policy.retries + 1) + policy.max_wait_s
                if meta.deadline_s is not None:
                    limit_at = min(limit_at, meta.deadline_s)
                if time.monotonic() + delay >= limit_at:
                    raise _Degrade(reason, attempt, waited) from None
                await asyncio.sleep(delay)
                continue
            except BaseException:
                # Cancelled: give the slot back from a task nothing cancels.
                self._spawn(self._release(backend, ask, grant, Outcome("neutral"), tool.name))
                raise
            self.metrics.attempts.labels(tool.name, "ok").inc()
            await self._release(backend, ask, grant, Outcome("ok"), tool.name)
            return output, attempt, waited

    def _degraded(
        self,
        tool: Tool[Any],
        args: Any,
        key: str | None,
        reason: str,
        attempts: int,
        waited: float,
        elsewhere: CacheEntry | None = None,
    ) -> ToolResult:
        stale = self.cache.stale(key) if key is not None else None
        if stale is None and elsewhere is not None and elsewhere.keep_until > time.time():
            stale = elsewhere
        if stale is not None:
            return ToolResult(
                tool=tool.name,
                output=stale.output,
                degraded=True,
                cached=True,
                reason=f"{reason}; answered from a cached result {time.time() - stale.stored_at:.0f} s old",
                attempts=attempts,
                wait_s=waited,
            )
        return ToolResult(
            tool=tool.name,
            output=tool.policy.degraded(args, reason),
            degraded=True,
            reason=reason,
            attempts=attempts,
            wait_s=waited,
        )

    def _done(self, result: ToolResult, start: float) -> ToolResult:
        result.elapsed_s = time.monotonic() - start
        self.metrics.calls.labels(result.tool, result.outcome).inc()
        self.metrics.latency.labels(result.tool).observe(result.elapsed_s)
        return result

    def _backend(self, policy: BreakerPolicy) -> LimitBackend:
        backend = self._backends.get(policy)
        if backend is None:
            backend = self._backends[policy] = LimitBackend.from_url(self.limits_url, policy)
        return backend

    def _ask(self, tool: Tool[Any]) -> Ask:
        p = tool.policy
        return Ask(
            limit_name(tool.name),
            p.calls_per_minute,
            None,
            p.max_concurrency,
            headroom=p.burst,
            window_s=p.window_s,
        )

    def _queue(self, tool: Tool[Any]) -> AdmissionQueue:
        q = self._queues.get(tool.name)
        if q is None:
            backend = self._backend(tool.policy.breaker)
            ask = self._ask(tool)
            # A lease outlives the call's timeout, so a dead process's slots come back by themselves.
            ttl = tool.policy.timeout_s + 5.0
            claim_id = uuid.uuid4().hex  # this process's queue head, as other processes see it

            async def acquire(cost: float, priority: int) -> Any:
                return await backend.acquire([ask], 0.0, ttl, Claim(claim_id, priority))

            async def abandon(grant: Grant, cost: float) -> None:  # never called: give it back
                await backend.release(ask, grant.lease_id, Outcome("neutral"))

            q = self._queues[tool.name] = AdmissionQueue(
                tool.name,
                acquire,
                abandon,
                weights=self.tenant_weights,
                poll_s=backend.poll_s,
                max_queue=self.max_queue,
            )
        return q

    async def _release(
        self, backend: LimitBackend, ask: Ask, grant: Grant, outcome: Outcome, name: str
    ) -> None:
        try:
            await backend.release(ask, grant.lease_id, outcome)
        except ProviderError as exc:  # the limits store is down: the lease expires on its own
            log.warning("tool release of %s failed (%s); its lease expires by itself", name, exc)
        q = self._queues.get(name)
        if q is not None:
            q.wake()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def breaker_states(self) -> dict[str, str]:
        """closed / half_open / open of every tool used in this process, from the shared state."""
        out: dict[str, str] = {}
        now = time.time()
        for name in sorted(self._used):
            tool = self.registry.get(name)
            backend = self._backend(tool.policy.breaker)
            snap = await backend.snapshot([limit_name(name)])
            out[name] = breaker_state(snap[limit_name(name)], now)
        return out

    async def _refresh_gauges(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            await self._refresh_gauges_once()

    async def _refresh_gauges_once(self) -> None:
        """The breaker gauges from the shared state (every process sees the same breaker)."""
        try:
            for name, state in (await self.breaker_states()).items():
                self.metrics.breaker_state.labels(name).set(_BREAKER_CODES[state])
        except ProviderError as exc:
            log.warning("tool breaker gauges: %s", exc)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_all([self._gauges, *[q._dispatcher for q in self._queues.values()]])
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for backend in self._backends.values():
            await backend.aclose()
        if self.shared is not None:
            await self.shared.aclose()
        await self.registry.aclose()
        from storyloom.tools.http import close_sessions

        await close_sessions()


def _classify(exc: BaseException) -> tuple[Outcome, bool, float | None]:
    """(the limits' outcome, retry?, Retry-After) of a failed attempt."""
    if isinstance(exc, ToolError):
        if exc.rate_limited:
            return Outcome("rate_limited", retry_after_s=exc.retry_after_s), True, exc.retry_after_s
        if not exc.transient:
            return Outcome("neutral"), False, None
        return Outcome("fail", retry_after_s=exc.retry_after_s), True, exc.retry_after_s
    # A timeout, a connection error, an answer we cannot read: the API is broken, not our input.
    return Outcome("fail"), True, None


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timeout: no answer within {timeout_s:.2f} s"
    if isinstance(exc, ToolError):
        if exc.rate_limited:
            return f"rate_limited: {exc}"
        return f"failed: {exc}"
    return f"failed: {type(exc).__name__}: {exc}"
