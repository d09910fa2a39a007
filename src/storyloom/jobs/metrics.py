"""Prometheus metrics of the job layer, observed in worker processes (merged by the API's /metrics
under PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import Histogram

__all__ = [
    "COMMIT_LAG",
    "LAG_BUCKETS_S",
    "bucket_counts",
    "forget_process_metrics",
    "histogram_parts",
    "observe_all",
    "write_counts",
]

LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 60)

COMMIT_LAG = Histogram(
    "storyloom_event_commit_lag_seconds",
    "Delay from an event's creation to the commit that makes it durable (the worker's share of the lag).",
    buckets=LAG_BUCKETS_S,
)


def histogram_parts(histogram: Any) -> tuple[Sequence[float], list[Any], Any] | None:
    """A histogram's bucket bounds, bucket values and sum, to write several observations at once;
    None if prometheus_client's histogram ever changes shape (then observe one by one)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not bounds or buckets is None or total is None or len(buckets) != len(bounds):
        return None
    return bounds, buckets, total


def bucket_counts(bounds: Sequence[float], values: Sequence[float], into: dict[int, int]) -> None:
    """Add each value's bucket index (the first bound >= value, as observe's `value <= bound`)."""
    for value in values:
        i = bisect_left(bounds, value)
        into[i] = into.get(i, 0) + 1


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for each of `values` as one write per bucket touched and one for the
    sum: under PROMETHEUS_MULTIPROC_DIR each write is an mmap update with a pid check, and a group
    commit observed each of its events (~2% of a worker at 200 chapter jobs)."""
    parts = histogram_parts(histogram)
    if parts is None:
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    bucket_counts(parts[0], values, counts)
    write_counts(histogram, counts, sum(values))


def write_counts(histogram: Any, counts: dict[int, int], total: float) -> None:
    """Add `counts` (bucket index -> observations) and their `total` to a histogram whose shape
    `histogram_parts` accepted: one write per bucket touched and one for the sum."""
    if not counts:
        return
    histogram._sum.inc(total)
    buckets = histogram._buckets
    for i, n in counts.items():
        buckets[i].inc(n)


def forget_process_metrics(pid: int) -> None:
    """Drop a dead child's live gauges from the merged view (its counters and histograms stay)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
