"""Prometheus metrics of the job layer, observed in worker processes (merged by the API's /metrics
under PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os

from prometheus_client import Histogram

__all__ = ["COMMIT_LAG", "LAG_BUCKETS_S", "forget_process_metrics"]

LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 60)

COMMIT_LAG = Histogram(
    "storyloom_event_commit_lag_seconds",
    "Delay from an event's creation to the commit that makes it durable (the worker's share of the lag).",
    buckets=LAG_BUCKETS_S,
)


def forget_process_metrics(pid: int) -> None:
    """Drop a dead child's live gauges from the merged view (its counters and histograms stay)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
