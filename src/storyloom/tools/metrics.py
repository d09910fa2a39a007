"""The tools' Prometheus metrics, all under `storyloom_tool_*` (multiprocess-compatible modes).

calls by tool and outcome (ok, cached, degraded, failed), latency, cache lookups (the hit rate is
hits / lookups), breaker state (0 closed, 1 half-open, 2 open, from the shared state), limit waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when first used: `serve` must set the multiprocess directory first
    from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ToolMetrics", "tool_metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class ToolMetrics:
    calls: Counter
    latency: Histogram
    cache_lookups: Counter
    breaker_state: Gauge
    limit_wait: Histogram
    attempts: Counter


@cache
def tool_metrics() -> ToolMetrics:
    """Registered once per process in the default registry (the API's /metrics serves it).
    prometheus_client picks its storage when first imported, so importing it with this module
    (every CLI start does) kept `serve`'s workers out of the multiprocess directory."""
    from prometheus_client import Counter, Gauge, Histogram

    return ToolMetrics(
        calls=Counter(
            "storyloom_tool_calls",
            "Tool calls by outcome (ok, cached, degraded, failed)",
            ["tool", "outcome"],
        ),
        latency=Histogram(
            "storyloom_tool_latency_seconds",
            "Time of a tool call, waits included",
            ["tool"],
            buckets=_LATENCY_BUCKETS,
        ),
        cache_lookups=Counter(
            "storyloom_tool_cache_lookups", "Tool cache lookups by result (hit, miss)", ["tool", "result"]
        ),
        breaker_state=Gauge(
            "storyloom_tool_breaker_state",
            "Breaker of a tool: 0 closed, 1 half-open, 2 open",
            ["tool"],
            multiprocess_mode="max",
        ),
        limit_wait=Histogram(
            "storyloom_tool_limit_wait_seconds",
            "Wait for a slot under a tool's limits",
            ["tool"],
            buckets=_WAIT_BUCKETS,
        ),
        attempts=Counter(
            "storyloom_tool_attempts", "Upstream attempts of tools by outcome", ["tool", "outcome"]
        ),
    )
