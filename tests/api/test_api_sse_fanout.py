"""What an SSE stream costs per batch: one frame encoding per stored event for all its streams,
one observe per histogram and batch, and no task per batch on a live stream."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry, Histogram

from storyloom.api import metrics as api_metrics
from storyloom.api.metrics import flush_observations, observe_many
from storyloom.api.sse import EventLike, SseEvent, event_stream, format_event
from storyloom.jobs.metrics import observe_all
from storyloom.jobs.models import StoredEvent


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observing_a_batch_at_once_counts_as_observing_each() -> None:
    values = [0.0, 0.004, 0.005, 0.02, 0.3, 0.3, 7.0, 1e9]
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("lag", "x", buckets=(0.005, 0.05, 0.5, 5), registry=one)
    h2 = Histogram("lag", "x", buckets=(0.005, 0.05, 0.5, 5), registry=many)
    for v in values:
        h1.observe(v)
    observe_many(h2, values)
    observe_many(h2, [])
    assert _samples(many) == _samples(one)
    now = CollectorRegistry()  # the worker's group commit writes its batch at once, unbuffered
    h3 = Histogram("lag", "x", buckets=(0.005, 0.05, 0.5, 5), registry=now)
    observe_all(h3, values)
    observe_all(h3, [])
    assert _samples(now) == _samples(one)


async def test_batches_observed_in_a_loop_are_written_together_soon_and_before_a_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the API's loop, observations wait up to FLUSH_EVERY_S and are then written at once, as
    many batches as came meanwhile; a flush (what a scrape does first) writes them now."""
    monkeypatch.setattr(api_metrics, "FLUSH_EVERY_S", 0.05)
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("lag", "x", buckets=(0.005, 0.05, 0.5, 5), registry=one)
    h2 = Histogram("lag", "x", buckets=(0.005, 0.05, 0.5, 5), registry=many)
    batches = [[0.001, 0.2], [0.3, 9.0], [0.004]]
    for batch in batches:
        for v in batch:
            h1.observe(v)
        observe_many(h2, batch)
    assert _samples(many)[("lag_count", "")] == 0  # not written yet
    await asyncio.sleep(0.15)
    assert _samples(many) == pytest.approx(_samples(one))  # the timer wrote them
    h1.observe(0.02)
    observe_many(h2, [0.02])
    flush_observations()
    assert _samples(many) == pytest.approx(_samples(one))


def test_a_stored_events_frame_is_encoded_once() -> None:
    ev = StoredEvent(id=9, job_id="j", seq=3, kind="step.delta", step="s", ts=1.5, data={"text": "x"})
    frame = format_event(ev)
    assert format_event(ev) is frame and ev.encoded is frame
    assert frame.startswith(b"id: 3\nevent: step.delta\ndata: {") and frame.endswith(b"\n\n")
    copy = StoredEvent(id=9, job_id="j", seq=3, kind="step.delta", step="s", ts=1.5, data={"text": "x"})
    assert copy == ev and copy.encoded is None  # the cache is no part of the event
    api_made = SseEvent(seq=3, kind="step.delta", step="s", ts=1.5, data={"text": "x"})
    assert format_event(api_made) == frame


class _Ready:
    """A `ReadyBatches` with batches released by the test."""

    def __init__(self) -> None:
        self.queue: list[Sequence[EventLike]] = []
        self.ready = asyncio.Event()
        self.closed = False
        self.interrupted = 0

    def put(self, batch: Sequence[EventLike]) -> None:
        self.queue.append(batch)
        self.ready.set()

    async def wait_ready(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self.ready.wait()
        except TimeoutError:
            pass
        return bool(self.queue)

    async def next_batch(self) -> Sequence[EventLike]:
        batch = self.queue.pop(0)
        if not self.queue:
            self.ready.clear()
        return batch

    def interrupt(self) -> None:
        self.interrupted += 1
        self.ready.set()

    async def aclose(self) -> None:
        self.closed = True


def _ev(seq: int, kind: str = "step.delta") -> SseEvent:
    return SseEvent(seq=seq, kind=kind, step="s", ts=0.0, data={})


async def test_a_live_stream_waits_on_its_source_with_heartbeats_and_no_task_per_batch() -> None:
    source = _Ready()
    batches: list[int] = []
    stream = event_stream(
        source,
        heartbeat_s=0.05,
        is_terminal=lambda e: e.kind == "job.completed",
        on_batch=lambda sent: batches.append(len(sent)),
    )
    assert (await anext(stream)).startswith(b": ping ")  # nothing for 50 ms
    tasks_before = len(asyncio.all_tasks())
    source.put([_ev(1), _ev(2)])
    assert (await anext(stream)).count(b"id: ") == 2
    source.put([_ev(3)])
    assert (await anext(stream)).startswith(b"id: 3\n")
    assert len(asyncio.all_tasks()) == tasks_before  # the old path made one per batch
    source.put([_ev(4, "job.completed"), _ev(5)])
    last = await anext(stream)
    assert b"id: 4\n" in last and b"id: 5" not in last
    assert [chunk async for chunk in stream] == []
    assert batches == [2, 1, 1] and source.closed


async def test_a_live_stream_ends_at_once_when_the_server_closes() -> None:
    source, closing = _Ready(), asyncio.Event()
    stream = event_stream(source, heartbeat_s=30.0, is_terminal=lambda e: False, closing=closing)
    source.put([_ev(1)])
    assert (await anext(stream)).startswith(b"id: 1\n")
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    closing.set()
    try:
        async with asyncio.timeout(2.0):
            await pending
        raise AssertionError("the stream sent something after closing")
    except StopAsyncIteration:
        pass
    assert source.interrupted >= 1 and source.closed
