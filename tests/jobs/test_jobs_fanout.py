"""The hub's fan-out at many streams: a burst of wake-ups is one poll, every stream of a job gets
the same event objects (replay and live), and a subscription can be waited on without reading."""

from __future__ import annotations

import asyncio
import time

import pytest

from storyloom.jobs import EventHub, GroupCommitWriter, JobEventSink, JobQueue
from storyloom.store import Database


async def test_a_burst_of_wake_ups_shares_polls(db: Database, queue: JobQueue) -> None:
    """Wake-ups every 2 ms for 0.3 s (two workers' commits, submissions) cost one poll per gap,
    not one each: without the gap this hub polled ~150 times."""
    hub = EventHub(db, poll_interval_s=5.0, idle_interval_s=5.0, min_poll_gap_s=0.03)
    job = await queue.submit("k", {})
    sub = hub.subscribe(job.id, 0)
    await hub.start()
    await asyncio.sleep(0.05)
    before = hub.polls
    t0 = time.monotonic()
    wakes = 0
    while time.monotonic() - t0 < 0.3:
        hub.wake()
        wakes += 1
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.05)
    elapsed = time.monotonic() - t0
    # at most one poll per gap however many wake-ups came (and however slow the machine ran)
    assert 1 <= hub.polls - before <= elapsed / 0.03 + 2 < wakes
    sub.close()
    await hub.stop()


async def test_a_wake_up_after_a_quiet_spell_polls_at_once(db: Database, queue: JobQueue) -> None:
    """Only a wake-up within the gap of the last poll waits, and only for the rest of the gap."""
    hub = EventHub(db, poll_interval_s=5.0, idle_interval_s=5.0, min_poll_gap_s=0.5)
    job = await queue.submit("k", {})
    sub = hub.subscribe(job.id, 0)
    await hub.start()
    assert [e.seq for e in [await anext(sub)]] == [1]  # the replay: a poll was made
    polled_at = hub._polled_at
    assert polled_at > 0
    assert hub.gap_left_s(polled_at + 0.1) == pytest.approx(0.4)  # in a burst: the rest of the gap
    assert hub.gap_left_s(polled_at + 0.5) == 0.0  # after a quiet spell: at once
    assert hub.gap_left_s(polled_at + 60) == 0.0
    sub.close()
    await hub.stop()


async def test_every_stream_of_a_job_gets_the_same_event_objects(db: Database, queue: JobQueue) -> None:
    """One object per row, so its SSE frame is encoded once for all of them (StoredEvent.encoded)."""
    hub = EventHub(db, poll_interval_s=0.02)
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    job = await queue.submit("k", {})
    sink = await JobEventSink.open(db, writer, job.id)
    sink.append("step.delta", {"i": 0})
    await writer.flush()
    opened = await asyncio.gather(*(hub.open(job.id, 0) for _ in range(3)))
    subs = [sub for _, sub in opened]
    replayed = [[await anext(sub), await anext(sub)] for sub in subs]
    assert all(r[0] is replayed[0][0] and r[1] is replayed[0][1] for r in replayed)
    sink.append("step.delta", {"i": 1})
    sink.append("job.completed", {})
    await writer.flush()
    async with asyncio.timeout(5):
        live = [[await anext(sub) for _ in range(2)] for sub in subs]
    assert [e.seq for e in live[0]] == [3, 4]
    assert all(r[0] is live[0][0] and r[1] is live[0][1] for r in live)
    await writer.stop()
    await hub.stop()


async def test_waiting_for_a_subscription_reads_nothing_and_can_be_interrupted(
    db: Database, queue: JobQueue
) -> None:
    hub = EventHub(db, poll_interval_s=0.02)
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    job = await queue.submit("k", {})
    sink = await JobEventSink.open(db, writer, job.id)
    sub = hub.subscribe(job.id, 0)
    await hub.start()
    assert await sub.wait_ready(0.01)  # the replay is due
    assert (await anext(sub)).seq == 1
    t0 = time.monotonic()
    assert not await sub.wait_ready(0.1)  # nothing yet: a heartbeat's timeout
    assert time.monotonic() - t0 >= 0.09
    asyncio.get_running_loop().call_later(0.05, sub.interrupt)
    t0 = time.monotonic()
    assert not await sub.wait_ready(10.0)  # interrupted: back early, nothing consumed
    assert time.monotonic() - t0 < 5.0
    sink.append("step.delta", {"i": 0})
    await writer.flush()
    assert await sub.wait_ready(5.0)
    assert sub.drain_ready(10)[0].seq == 2 and sub.drain_ready(10) == []
    await writer.stop()
    await hub.stop()
