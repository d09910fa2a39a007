"""The gateway's Prometheus metrics, all under `storyloom_llm_*`.

Types and gauge modes are chosen to merge under prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR): gauges of things summed over processes use `livesum`, per-deployment
shared states use `max`/`livemax`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["GatewayMetrics", "MetricChildren", "gateway_metrics"]

_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    queue_length: Gauge
    queue_wait: Histogram
    in_flight: Gauge
    requests: Counter
    rate_limited: Counter
    retries: Counter
    breaker_state: Gauge
    breaker_opens: Gauge
    adaptive_limit: Gauge
    tokens: Counter
    cost: Counter
    cache_hits: Counter


@cache
def gateway_metrics() -> GatewayMetrics:
    """Registered once per process in the default registry (the API's /metrics serves it)."""
    return GatewayMetrics(
        queue_length=Gauge(
            "storyloom_llm_queue_length",
            "Calls waiting for admission",
            ["model"],
            multiprocess_mode="livesum",
        ),
        queue_wait=Histogram(
            "storyloom_llm_queue_wait_seconds",
            "Time from call to admission",
            ["model"],
            buckets=_WAIT_BUCKETS,
        ),
        in_flight=Gauge(
            "storyloom_llm_in_flight",
            "Calls in flight per deployment",
            ["deployment"],
            multiprocess_mode="livesum",
        ),
        requests=Counter(
            "storyloom_llm_upstream_requests", "Upstream attempts by outcome", ["deployment", "outcome"]
        ),
        rate_limited=Counter("storyloom_llm_rate_limited", "429 answers from providers", ["deployment"]),
        retries=Counter("storyloom_llm_retries", "Retried attempts", ["model", "reason"]),
        breaker_state=Gauge(
            "storyloom_llm_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            ["deployment"],
            multiprocess_mode="livemax",
        ),
        breaker_opens=Gauge(
            "storyloom_llm_breaker_opens",
            "Times the circuit breaker opened (shared state: the same number in every process)",
            ["deployment"],
            multiprocess_mode="livemax",
        ),
        adaptive_limit=Gauge(
            "storyloom_llm_adaptive_limit",
            "Current adaptive concurrency limit",
            ["deployment"],
            multiprocess_mode="livemin",
        ),
        tokens=Counter("storyloom_llm_tokens", "Tokens used", ["model", "tenant", "kind"]),
        cost=Counter("storyloom_llm_cost_usd", "Cost in USD", ["model", "tenant"]),
        cache_hits=Counter("storyloom_llm_cache_hits", "Answers served from the cache", ["model"]),
    )


class MetricChildren:
    """Each metric's child per label values, made once and then looked up in a dict.

    prometheus_client's `labels()` validates the values, builds their tuple and takes a lock on
    every call; the gateway used it eight times per model call. The children are the same objects
    `labels()` returns (the metric keeps them for the life of the process anyway), so caching them
    adds no memory that was not already held.
    """

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def __call__(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child
