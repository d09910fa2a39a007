"""Prometheus metrics of the service, including the seed's names.

Two kinds, because the API must stay stateless:
- figures that live in the database (queue size, live workers, jobs per status and their durations)
  are read at scrape time and exposed by `ServiceCollector`, so any number of API processes agree;
- figures only the API sees (event lag to clients, submissions, SSE connections) are ordinary
  prometheus-client metrics; with PROMETHEUS_MULTIPROC_DIR set (the `serve` command sets it),
  worker processes' metrics (e.g. the gateway's `storyloom_llm_*`) are merged in as well.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from storyloom.jobs.metrics import LAG_BUCKETS_S, bucket_counts, histogram_parts, write_counts

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DURATION_BUCKETS_S",
    "EVENT_LAG",
    "HUB_LAG",
    "SSE_OPEN",
    "STEP_DURATION",
    "SUBMISSIONS",
    "ServiceCollector",
    "ServiceSnapshot",
    "flush_observations",
    "observe_many",
    "render_metrics",
]

_FINAL_STATUSES = ("completed", "failed", "cancelled")

# The seed's buckets for novel_generation_duration_seconds.
DURATION_BUCKETS_S: tuple[float, ...] = (1, 5, 10, 20, 30, 60, 120)

EVENT_LAG = Histogram(
    "storyloom_event_lag_seconds",
    "Delay from an event's creation to its write to an SSE client; replay=true for events older than the "
    "connection.",
    ["replay"],
    buckets=(*LAG_BUCKETS_S, 600),
)
HUB_LAG = Histogram(
    "storyloom_event_hub_lag_seconds",
    "Delay from an event's creation to its delivery by this process's event hub (before the SSE write): "
    "worker, commit and poll time, without the send; events created after the stream opened.",
    buckets=LAG_BUCKETS_S,
)
STEP_DURATION = Histogram(
    "storyloom_step_duration_seconds",
    "Duration of finished flow steps (by short step name), as seen in the event log streamed by the API.",
    ["step"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
SUBMISSIONS = Counter(
    "storyloom_api_submissions_total",
    "Job submissions by outcome: accepted, duplicate (idempotency key), rejected (queue full).",
    ["outcome"],
)
SSE_OPEN = Gauge(
    "storyloom_sse_connections", "Open SSE streams in this API process.", multiprocess_mode="livesum"
)


#: How long observations may wait in this process before they are written to the histograms.
FLUSH_EVERY_S = 0.5


class _Pending:
    """Observations of one histogram (child) not yet written: counts per bucket index, and the sum."""

    __slots__ = ("counts", "histogram", "total")

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram
        self.counts: dict[int, int] = {}
        self.total = 0.0


_pending: dict[int, _Pending] = {}
_flush_handle: asyncio.TimerHandle | None = None
_flush_loop: asyncio.AbstractEventLoop | None = None  # the handle's (a test's loop may be gone)


def observe_many(histogram: Any, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for each of `values`, written within FLUSH_EVERY_S as one write per
    bucket touched plus one for the sum, for all the batches observed meanwhile.

    Under PROMETHEUS_MULTIPROC_DIR every write is an mmap update under a lock with a pid check;
    observed per stream batch, it was still ~10% of the API's CPU at 200 streams (each stream's
    batch wrote its buckets). Buffered, a process writes each touched bucket about twice a second
    whatever the number of streams. `render_metrics` flushes first, so a scrape of this process
    misses nothing; another API process's figures are at most FLUSH_EVERY_S old. Without a running
    event loop (a timer to flush), or if prometheus_client's histogram changes shape, values are
    written at once."""
    if not values:
        return
    parts = histogram_parts(histogram)
    if parts is None:
        for value in values:
            histogram.observe(value)
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    pending = _pending.get(id(histogram))
    if pending is None or pending.histogram is not histogram:
        pending = _pending[id(histogram)] = _Pending(histogram)
    bucket_counts(parts[0], values, pending.counts)
    pending.total += sum(values)
    global _flush_handle, _flush_loop
    if loop is None:
        flush_observations()
    elif _flush_handle is None or _flush_loop is not loop:
        if _flush_handle is not None:
            _flush_handle.cancel()
        _flush_handle = loop.call_later(FLUSH_EVERY_S, flush_observations)
        _flush_loop = loop


def flush_observations() -> None:
    """Write every buffered observation to its histogram now (before a scrape, at shutdown)."""
    global _flush_handle
    if _flush_handle is not None:
        _flush_handle.cancel()
        _flush_handle = None
    pending = list(_pending.values())
    _pending.clear()
    for item in pending:
        write_counts(item.histogram, item.counts, item.total)


@dataclass(slots=True)
class ServiceSnapshot:
    """Database-derived figures at one scrape. `duration_buckets` are cumulative counts per bucket."""

    queue_size: int = 0
    active_workers: int = 0
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    duration_buckets: Sequence[int] = ()
    duration_count: int = 0
    duration_sum_s: float = 0.0


class ServiceCollector(Collector):
    """Exposes the latest `ServiceSnapshot` under the seed's metric names."""

    def __init__(self) -> None:
        self.snapshot = ServiceSnapshot()

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        requests = CounterMetricFamily(
            "novel_generation_requests",
            "Finished novel generation jobs by final status (from the job table).",
            labels=["status"],
        )
        for status in _FINAL_STATUSES:
            requests.add_metric([status], snap.jobs_by_status.get(status, 0))
        yield requests
        buckets: list[tuple[str, float]] = [
            (_le(bound), float(count))
            for bound, count in zip(DURATION_BUCKETS_S, snap.duration_buckets, strict=False)
        ]
        buckets.append(("+Inf", float(snap.duration_count)))
        yield HistogramMetricFamily(
            "novel_generation_duration_seconds",
            "Wall time from submission to completion of finished jobs.",
            buckets=buckets,
            sum_value=snap.duration_sum_s,
        )
        yield GaugeMetricFamily(
            "novel_active_workers", "Worker processes with a live heartbeat.", value=snap.active_workers
        )
        yield GaugeMetricFamily(
            "novel_queue_size", "Jobs waiting to run (pending or retrying).", value=snap.queue_size
        )


def _le(bound: float) -> str:
    return str(float(bound))


def render_metrics(service: CollectorRegistry) -> bytes:
    """The exposition text: this process's (or all processes') metrics, then the service figures."""
    flush_observations()
    mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if mp_dir and os.path.isdir(mp_dir):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=mp_dir)  # type: ignore[no-untyped-call]
        base = generate_latest(merged)
    else:
        base = generate_latest(REGISTRY)
    return base + generate_latest(service)
