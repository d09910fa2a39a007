"""The gateway: every model call goes admission → shared limits → deployment → provider, once.

    chat(request)
      cache hit? ─────────────────────────────────────────────► answer
      tenant budget: hold worst-case cost           (LimitBackend: shared by every process)
      for model in [model, *fallbacks]:            (switch only before the first streamed token)
        retry loop (attempts, total time, full-jitter backoff, Retry-After):
          AdmissionQueue(model).admit   priority, tenant fair share, deadline, measured wait
            LimitBackend.acquire        least-loaded healthy deployment with a concurrency
                                        lease + 1 request + (prompt + output estimate) tokens
          HttpModelClient.chat          (no retries inside)
          LimitBackend.release          settle tokens, breaker outcome, 429 pause; AIMD update
      ledger + metrics; settle the budget hold to the real cost

Leases are renewed in the background while calls run and expire when a process dies, so no
concurrency slot ever leaks; a cancelled caller returns its lease at once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import logging
import time
import uuid
from typing import Any

from storyloom.config import Settings
from storyloom.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ProviderError,
    ProviderTimeout,
    StreamCutError,
)
from storyloom.eventloop import cancel_all
from storyloom.limits.base import LimitBackend
from storyloom.limits.budgets import BudgetDenied, BudgetHold, BudgetLimits
from storyloom.limits.state import Ask, Claim, Grant, Outcome, breaker_state
from storyloom.llm.adaptive import AdaptiveLimit
from storyloom.llm.admission import AdmissionQueue
from storyloom.llm.cache import ResponseCache, cache_key
from storyloom.llm.client import HttpModelClient
from storyloom.llm.deadlines import FirstTokenDeadline
from storyloom.llm.deployments import Deployment, GatewayConfig, load_gateway_config
from storyloom.llm.ledger import CallRecord, Ledger, PriceTable
from storyloom.llm.metrics import MetricChildren, gateway_metrics
from storyloom.llm.retry import backoff_s, is_retryable, outcome_kind, refunds_all
from storyloom.llm.tokens import estimate_message_tokens
from storyloom.llm.types import (
    ChatRequest,
    ChatResult,
    DeltaCallback,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
)

__all__ = ["Gateway"]

log = logging.getLogger(__name__)
_BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}


class _Delivery:
    """Forwards deltas to the caller and remembers whether any were sent (then no switch, no retry)."""

    __slots__ = ("_on_delta", "parts", "started")

    def __init__(self, on_delta: DeltaCallback | None) -> None:
        self._on_delta = on_delta
        self.started = False
        self.parts: list[str] = []

    def __call__(self, text: str) -> None:
        self.started = True
        self.parts.append(text)
        if self._on_delta is not None:
            self._on_delta(text)


class Gateway:
    """A `ModelClient` over the configured deployments. One per process (per event loop)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        backend: LimitBackend | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.config = config
        self.backend = backend or LimitBackend.from_url(config.limits_url, config.breaker)
        self.ledger = Ledger(prices or PriceTable.bundled(), dict(config.tenant_budgets_usd))
        self._ttft: dict[tuple[str, str], FirstTokenDeadline] = {}
        self.cache = (
            ResponseCache(config.cache_ttl_s, config.cache_max_entries) if config.cache_ttl_s > 0 else None
        )
        self.counts: collections.Counter[str] = collections.Counter()
        self.metrics = gateway_metrics()
        self._child = MetricChildren()
        self._deployments: dict[str, tuple[Deployment, ...]] = {}
        self._clients: dict[str, HttpModelClient] = {}
        self._adaptive: dict[str, AdaptiveLimit] = {}
        self._queues: dict[str, AdmissionQueue] = {}
        # lease/hold id -> the documents it is held in (a deployment, or a budget's periods), renewed
        # in the background
        self._held: dict[str, tuple[str, ...]] = {}
        self._out_estimate: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, *, sim_url: str | None = None) -> Gateway:
        return cls(load_gateway_config(settings, sim_url=sim_url))

    # -- the call --------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, on_delta: DeltaCallback | None = None) -> ChatResult:
        """One logical call: cached, budgeted, admitted, retried and failed over as configured."""
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="llm-lease-renewer")
        self.counts["calls"] += 1
        key = cache_key(request) if self.cache is not None else None
        if key is not None and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.counts["cache_hits"] += 1
                self._child(self.metrics.cache_hits, request.model).inc()
                if on_delta is not None and hit.text:
                    on_delta(hit.text)
                return dataclasses.replace(hit, cached=True, attempts=0, cost_usd=0.0, latency_s=0.0)
        meta = request.meta
        prompt = estimate_message_tokens(request.messages)
        holds = await self._reserve_budgets(request, prompt)
        try:
            result = await self._with_fallbacks(request, on_delta, prompt)
        except ProviderError:
            for hold in holds:  # failed without usage: give the whole hold back
                await self._settle_budget(meta.tenant, hold, 0.0, 0)
            raise
        except BaseException:
            for hold in holds:  # cancelled: the settle runs in a task the cancellation cannot reach
                self._spawn(self._settle_budget(meta.tenant, hold, 0.0, 0))
            raise
        cost = self._account(request, result)
        for hold in holds:
            await self._settle_budget(meta.tenant, hold, cost, result.usage.total_tokens)
        if key is not None and self.cache is not None:
            self.cache.put(key, result)
        return result

    async def _reserve_budgets(self, request: ChatRequest, prompt: int) -> list[BudgetHold]:
        """The tenant's hold, then the call's budget scope's (`CallMeta.budget_scope`: a lifetime
        cap of the caller's own, e.g. one book's); a scope that refuses gives the tenant's back."""
        holds: list[BudgetHold] = []
        tenant_hold = await self._reserve_budget(request, prompt)
        if tenant_hold is not None:
            holds.append(tenant_hold)
        meta = request.meta
        if meta.budget_scope is not None and meta.budget_scope_usd is not None:
            limits = BudgetLimits(budget_usd=max(0.0, meta.budget_scope_usd))
            try:
                scope_hold = await self._reserve_budget(
                    request, prompt, scope=meta.budget_scope, limits=limits
                )
            except BaseException:
                for hold in holds:
                    self._spawn(self._settle_budget(meta.tenant, hold, 0.0, 0))
                raise
            if scope_hold is not None:
                holds.append(scope_hold)
        return holds

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Vectors through the same admission, shared limits (one request + the inputs' tokens),
        retries and ledger as chat calls; no fallback (another model's vectors would not compare)."""
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="llm-lease-renewer")
        cfg, meta = self.config, request.meta
        deps = {d.name: d for d in self._deployments_of(request.model)}
        queue = self._queue(request.model)
        cost = float(sum(estimate_message_tokens([{"content": t}]) for t in request.inputs))
        give_up_at = time.monotonic() + cfg.retry_budget_s
        attempt = 0
        while True:
            admitted = await queue.admit(meta.tenant, meta.priority, cost, meta.deadline_s)
            dep = deps[admitted.grant.deployment]
            ask, grant = self._ask(dep), admitted.grant
            attempt += 1
            self._held[grant.lease_id] = (dep.name,)
            self._child(self.metrics.in_flight, dep.name).inc()
            try:
                result = await self._client(dep).embed(
                    request, provider_model=dep.provider_model, total_timeout_s=dep.total_timeout_s
                )
            except ProviderError as exc:
                await self._release(
                    dep, ask, grant, Outcome(outcome_kind(exc), int(cost), 0, exc.retry_after_s)
                )
                self._after_failure(dep, exc)
                delay = backoff_s(
                    attempt, exc.retry_after_s, base_s=cfg.backoff_base_s, max_s=cfg.backoff_max_s
                )
                if (
                    not is_retryable(exc)
                    or attempt >= cfg.max_attempts
                    or time.monotonic() + delay > give_up_at
                ):
                    raise
                self.counts["retries"] += 1
                await asyncio.sleep(delay)
                continue
            except BaseException:
                self._spawn(self._release(dep, ask, grant, Outcome("neutral")))
                raise
            await self._release(dep, ask, grant, Outcome("ok", int(cost), result.usage.prompt_tokens))
            result.attempts, result.deployment = attempt, dep.name
            result.cost_usd = self.ledger.prices.cost(result.usage, dep.provider_model, request.model)
            self.ledger.record(
                CallRecord(
                    meta.tenant,
                    meta.job_id,
                    meta.step,
                    request.model,
                    dep.name,
                    result.usage,
                    result.cost_usd,
                    False,
                )
            )
            self._child(self.metrics.tokens, request.model, meta.tenant, "prompt").inc(
                result.usage.prompt_tokens
            )
            self._child(self.metrics.cost, request.model, meta.tenant).inc(result.cost_usd)
            return result

    async def _reserve_budget(
        self,
        request: ChatRequest,
        prompt: int,
        *,
        scope: str | None = None,
        limits: BudgetLimits | None = None,
    ) -> BudgetHold | None:
        """Hold the call's worst case (prompt + max output at the dearest deployment it may reach)
        against every budget period of the tenant in the shared backend, so the processes sharing it
        together never overspend (LiteLLM #40095); the hold is renewed like a lease while the call runs."""
        tenant = scope if scope is not None else request.meta.tenant
        limits = limits if limits is not None else self.config.budget_limits(tenant)
        if not limits.any:
            return None
        worst = Usage(prompt, request.max_tokens or int(self._output_estimate(request.model)))
        prices = self.ledger.prices
        amount = max(
            (
                prices.cost(worst, d.provider_model, model)
                for model in (request.model, *self.config.fallbacks.get(request.model, ()))
                for d in self._deployments_of(model)
            ),
            default=prices.cost(worst, request.model),
        )
        got = await self.backend.reserve_budget(
            tenant, limits, amount, worst.total_tokens, self.config.lease_ttl_s
        )
        if isinstance(got, BudgetDenied):
            who = f"budget scope {scope!r}" if scope is not None else f"tenant {tenant!r}"
            raise _budget_error(who, got, amount, worst.total_tokens)
        if got.keys:
            self._held[got.hold_id] = got.keys
        return got

    async def _settle_budget(self, tenant: str, hold: BudgetHold, cost_usd: float, tokens: int) -> None:
        """Settle the hold to the real cost; a cancelled caller does not stop it (shielded task)."""
        self._held.pop(hold.hold_id, None)

        async def settle() -> None:
            try:
                await self.backend.settle_budget(hold, cost_usd, tokens)
            except ProviderError as exc:  # the limits store is down: the hold expires, the cost is lost
                log.warning("llm budget settle for tenant %r failed: %s", tenant, exc)

        await asyncio.shield(self._spawn(settle()))

    async def _with_fallbacks(
        self, request: ChatRequest, on_delta: DeltaCallback | None, prompt: int
    ) -> ChatResult:
        chain = (request.model, *self.config.fallbacks.get(request.model, ()))
        delivery = _Delivery(on_delta)
        last: ProviderError | None = None
        for i, model in enumerate(chain):
            req = request if i == 0 else dataclasses.replace(request, model=model)
            try:
                return await self._call_model(req, delivery, prompt, has_fallback=i + 1 < len(chain))
            except ProviderError as exc:
                if delivery.started or not is_retryable(exc) or i + 1 == len(chain):
                    raise
                log.warning("llm fallback %s -> %s: %s", model, chain[i + 1], exc)
                self.counts["fallbacks"] += 1
                last = exc
        assert last is not None  # the loop either returned or raised
        raise last

    async def _call_model(
        self, request: ChatRequest, delivery: _Delivery, prompt: int, *, has_fallback: bool
    ) -> ChatResult:
        cfg, meta = self.config, request.meta
        deps = {d.name: d for d in self._deployments_of(request.model)}
        queue = self._queue(request.model)
        started = time.monotonic()
        give_up_at = started + cfg.retry_budget_s
        if meta.deadline_s is not None:
            give_up_at = min(give_up_at, meta.deadline_s)
        if meta.retry_deadline_s is not None:
            give_up_at = min(give_up_at, meta.retry_deadline_s)
        cost = float(prompt + (request.max_tokens or self._output_estimate(request.model)))
        attempt = 0
        waited = 0.0
        while True:
            try:
                admitted = await queue.admit(meta.tenant, meta.priority, cost, meta.deadline_s)
            except CircuitOpenError:
                if has_fallback:
                    raise
                await self._sleep_or_raise(0.25, give_up_at)  # all open, nothing to fall back to: wait
                continue
            self._child(self.metrics.queue_wait, request.model).observe(admitted.wait_s)
            waited += admitted.wait_s
            grant = admitted.grant
            dep = deps[grant.deployment]
            ask = self._ask(dep)
            attempt += 1
            self.counts["attempts"] += 1
            self._held[grant.lease_id] = (dep.name,)
            self._child(self.metrics.in_flight, dep.name).inc()
            first_token = self._first_token(dep)
            ttft_s = first_token.deadline_s(attempt)
            try:
                result = await self._client(dep).chat(
                    request,
                    delivery,
                    provider_model=dep.provider_model,
                    ttft_timeout_s=ttft_s,
                    total_timeout_s=dep.total_timeout_s,
                )
            except ProviderError as exc:
                if isinstance(exc, ProviderTimeout) and exc.phase == "ttft":
                    first_token.timed_out(ttft_s)
                kind = outcome_kind(exc)
                actual = 0 if refunds_all(exc) else None
                await self._release(dep, ask, grant, Outcome(kind, int(cost), actual, exc.retry_after_s))
                self._after_failure(dep, exc)
                if delivery.started:
                    raise StreamCutError(
                        f"{dep.name}: failed after streaming began; not retried or switched, so two answers "
                        f"are never spliced: {exc}",
                        partial_text="".join(delivery.parts),
                        deployment=dep.name,
                    ) from exc
                if not is_retryable(exc) or attempt >= cfg.max_attempts:
                    raise
                delay = backoff_s(
                    attempt, exc.retry_after_s, base_s=cfg.backoff_base_s, max_s=cfg.backoff_max_s
                )
                if time.monotonic() + delay > give_up_at:
                    raise
                self.counts["retries"] += 1
                self._child(self.metrics.retries, request.model, type(exc).__name__).inc()
                await asyncio.sleep(delay)
                continue
            except BaseException:
                # Cancelled (or worse): return the lease now, from a task the cancellation cannot reach.
                self._spawn(self._release(dep, ask, grant, Outcome("neutral")))
                raise
            charged = result.usage.prompt_tokens + (
                request.max_tokens
                if dep.tpm_settle == "reserve" and request.max_tokens is not None
                else result.usage.completion_tokens
            )
            await self._release(dep, ask, grant, Outcome("ok", int(cost), charged))
            if result.ttft_s is not None:
                first_token.observe(result.ttft_s, ttft_s)
            self._after_success(dep, request.model, result)
            return dataclasses.replace(result, attempts=attempt, deployment=dep.name, queue_wait_s=waited)

    # -- pieces ----------------------------------------------------------------------------------

    def _deployments_of(self, model: str) -> tuple[Deployment, ...]:
        deps = self._deployments.get(model)
        if deps is None:
            deps = self._deployments[model] = self.config.for_model(model)
        return deps

    def _client(self, dep: Deployment) -> HttpModelClient:
        c = self._clients.get(dep.name)
        if c is None:
            c = self._clients[dep.name] = HttpModelClient(
                dep.base_url,
                dep.api_key,
                connect_timeout_s=dep.connect_timeout_s,
                ttft_timeout_s=dep.ttft_timeout_s,
                total_timeout_s=dep.total_timeout_s,
                name=dep.name,
            )
        return c

    def _first_token(self, dep: Deployment) -> FirstTokenDeadline:
        key = (dep.name, dep.provider_model)
        d = self._ttft.get(key)
        if d is None:
            d = self._ttft[key] = FirstTokenDeadline(dep.ttft_timeout_s, self.config.ttft)
        return d

    def _limit(self, dep: Deployment) -> AdaptiveLimit:
        a = self._adaptive.get(dep.name)
        if a is None:
            a = self._adaptive[dep.name] = AdaptiveLimit(dep.max_concurrency)
            if dep.max_concurrency is not None:
                self._child(self.metrics.adaptive_limit, dep.name).set(dep.max_concurrency)
        return a

    def _ask(self, dep: Deployment) -> Ask:
        return Ask(
            dep.name, dep.rpm, dep.tpm, self._limit(dep).limit, dep.weight, self.config.headroom, dep.window_s
        )

    def _queue(self, model: str) -> AdmissionQueue:
        q = self._queues.get(model)
        if q is None:
            deps = self._deployments_of(model)
            ttl = self.config.lease_ttl_s
            claim_id = uuid.uuid4().hex  # this process's queue head, as other processes see it

            async def acquire(cost: float, priority: int) -> Any:
                return await self.backend.acquire(
                    [self._ask(d) for d in deps], cost, ttl, Claim(claim_id, priority)
                )

            async def abandon(grant: Grant, cost: float) -> None:  # never sent: refund it all
                dep = next(d for d in deps if d.name == grant.deployment)
                await self.backend.release(self._ask(dep), grant.lease_id, Outcome("neutral", int(cost), 0))

            q = self._queues[model] = AdmissionQueue(
                model,
                acquire,
                abandon,
                weights=self.config.tenant_weights,
                poll_s=self.backend.poll_s,
                max_queue=self.config.max_queue,
            )
        return q

    def _output_estimate(self, model: str) -> float:
        return self._out_estimate.get(model, float(self.config.output_estimate_tokens))

    async def _release(self, dep: Deployment, ask: Ask, grant: Grant, outcome: Outcome) -> None:
        self._held.pop(grant.lease_id, None)
        self._child(self.metrics.in_flight, dep.name).dec()
        self._child(self.metrics.requests, dep.name, outcome.kind).inc()
        try:
            await self.backend.release(ask, grant.lease_id, outcome)
        except ProviderError as exc:  # the limits store is down: the lease will expire on its own
            log.warning("llm release of %s failed (%s); its lease expires by itself", dep.name, exc)
        for q in self._queues.values():
            q.wake()

    def _after_failure(self, dep: Deployment, exc: ProviderError) -> None:
        limit = self._limit(dep)
        kind = outcome_kind(exc)
        if kind == "rate_limited":
            self.counts["rate_limited"] += 1
            self._child(self.metrics.rate_limited, dep.name).inc()
            limit.on_rate_limited()
        elif kind == "fail":
            self.counts["failures"] += 1
            limit.on_failure()
        if limit.limit is not None:
            self._child(self.metrics.adaptive_limit, dep.name).set(limit.limit)

    def _after_success(self, dep: Deployment, model: str, result: ChatResult) -> None:
        limit = self._limit(dep)
        limit.on_success(result.ttft_s)
        if limit.limit is not None:
            self._child(self.metrics.adaptive_limit, dep.name).set(limit.limit)
        old = self._out_estimate.get(model)
        n = float(result.usage.completion_tokens)
        self._out_estimate[model] = n if old is None else 0.9 * old + 0.1 * n

    def _account(self, request: ChatRequest, result: ChatResult) -> float:
        meta = request.meta
        dep_model = next(
            (d.provider_model for d in self._deployments_of(request.model) if d.name == result.deployment),
            request.model,
        )
        cost = self.ledger.prices.cost(result.usage, dep_model, request.model)
        result.cost_usd = cost
        self.ledger.record(
            CallRecord(
                meta.tenant,
                meta.job_id,
                meta.step,
                request.model,
                result.deployment,
                result.usage,
                cost,
                False,
            )
        )
        m = self.metrics
        self._child(m.tokens, request.model, meta.tenant, "prompt").inc(result.usage.prompt_tokens)
        self._child(m.tokens, request.model, meta.tenant, "completion").inc(result.usage.completion_tokens)
        self._child(m.cost, request.model, meta.tenant).inc(cost)
        return cost

    async def _sleep_or_raise(self, delay: float, give_up_at: float) -> None:
        if time.monotonic() + delay > give_up_at:
            raise CircuitOpenError(
                "every deployment is open and the retry time is spent", retry_after_s=delay
            )
        await asyncio.sleep(delay)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _renew_forever(self) -> None:
        """Keep held leases alive (so long calls keep their slot) and refresh the breaker gauges."""
        period = max(0.05, min(self.config.lease_ttl_s / 3.0, 2.0))
        while True:
            await asyncio.sleep(period)
            try:
                held: dict[str, list[str]] = {}
                for lease_id, docs in list(self._held.items()):
                    for doc in docs:
                        held.setdefault(doc, []).append(lease_id)
                await self.backend.renew(held, self.config.lease_ttl_s)
                names = list(self._clients)
                if names:
                    now = time.time()
                    for name, st in (await self.backend.snapshot(names)).items():
                        self._child(self.metrics.breaker_state, name).set(
                            _BREAKER_CODES[breaker_state(st, now)]
                        )
                        self._child(self.metrics.breaker_opens, name).set(st["br"].get("opens", 0))
            except ProviderError as exc:
                log.warning("llm lease renewal failed: %s", exc)

    def forget_job(self, job_id: str) -> None:
        """The job's run in this process ended: drop its per-job and per-step ledger totals."""
        self.ledger.forget_job(job_id)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_all([self._renewer, *[q._dispatcher for q in self._queues.values()]])
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for c in self._clients.values():
            await c.aclose()
        await self.backend.aclose()


def _budget_error(who: str, denied: BudgetDenied, amount_usd: float, tokens: int) -> BudgetExceededError:
    """One sentence naming the period, the limit and when it resets; Retry-After = the reset."""
    spec, use = denied.spec, denied.usage
    what = {"total": "lifetime", "day": "daily", "month": "monthly"}[spec.period]
    if denied.unit == "usd":
        detail = (
            f"${spec.usd:.4f} would be exceeded (spent ${use.spent_usd:.4f}, in flight "
            f"${use.held_usd:.4f}, this call up to ${amount_usd:.4f})"
        )
    else:
        detail = (
            f"of {spec.tokens} tokens would be exceeded (used {use.spent_tokens}, in flight "
            f"{use.held_tokens}, this call up to {tokens})"
        )
    reset = ""
    retry_after: float | None = None
    if spec.ends_at is not None:
        retry_after = max(0.0, spec.ends_at - time.time())
        when = datetime.datetime.fromtimestamp(spec.ends_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reset = f"; it resets at {when}"
    return BudgetExceededError(
        f"{who} {what} budget ({denied.limit_name}) {detail}{reset}", retry_after_s=retry_after
    )
