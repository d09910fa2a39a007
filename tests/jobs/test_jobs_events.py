"""Event log: durable writer, per-job seq, hub fan-out with replay + live, no gap, no duplicate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from storyloom.flow.types import Event
from storyloom.jobs import (
    DurableCheckpoints,
    EventHub,
    GroupCommitWriter,
    JobEventSink,
    JobQueue,
    StoredEvent,
)
from storyloom.jobs.queue import append_event, read_events
from storyloom.store import Database
from storyloom.store.schema import checkpoints


async def _collect(sub_iter: object, n: int | None = None) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    async with asyncio.timeout(30):  # a hang becomes a failure that says where
        async for ev in sub_iter:  # type: ignore[attr-defined]
            out.append(ev)
            if n is not None and len(out) >= n:
                break
    return out


async def test_sink_assigns_gap_free_seq_and_writer_batches(db: Database, queue: JobQueue) -> None:
    job = await queue.submit("k", {})
    writer = GroupCommitWriter(db)
    await writer.start()
    sink = await JobEventSink.open(db, writer, job.id)
    for i in range(300):
        sink.emit(Event(run_id=job.id, kind="step.delta", step="s", ts=time.time(), data={"i": i}))
    await writer.flush()
    evs = await queue.events(job.id, after=0, limit=1000)
    assert [e.seq for e in evs] == list(range(1, 302))
    assert [e.data.get("i") for e in evs[1:]] == list(range(300))
    assert writer.commits < 50  # 300 rows, far fewer commits
    await writer.stop()


async def test_checkpoint_save_is_durable_and_grouped(db: Database, db_url: str) -> None:
    writer = GroupCommitWriter(db)
    store = DurableCheckpoints(db, writer)
    await asyncio.gather(*(store.save("run-1", f"step/{i}", {"v": i}) for i in range(200)))
    assert writer.commits <= 10 and writer.checkpoints_committed == 200
    await store.save("run-1", "step/0", {"v": "again"})  # a re-run overwrites
    await writer.stop()
    other = Database.from_url(db_url)  # a different process's view: only committed data
    try:
        loaded = await DurableCheckpoints(other, GroupCommitWriter(other)).load("run-1")
    finally:
        await other.close()
    assert len(loaded) == 200 and loaded["step/0"] == {"v": "again"} and loaded["step/199"] == {"v": 199}


async def test_subscribe_replays_then_follows_live_exactly_once(db: Database, queue: JobQueue) -> None:
    hub = EventHub(db, poll_interval_s=0.02)
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    job = await queue.submit("k", {})
    sink = await JobEventSink.open(db, writer, job.id)
    for i in range(50):
        sink.append("step.delta", {"i": i})
    await writer.flush()

    async def produce() -> None:
        for i in range(50, 400):
            sink.append("step.delta", {"i": i})
            if i % 25 == 0:
                await asyncio.sleep(0.01)
        await writer.flush()
        sink.append("job.completed", {})
        await writer.flush()

    async with hub.subscribe(job.id, after_seq=10) as sub:
        got, _ = await asyncio.gather(_collect(sub), produce())
    assert [e.seq for e in got] == list(range(11, 403))
    assert got[-1].kind == "job.completed"
    await writer.stop()
    await hub.stop()


async def test_many_subscribers_share_one_poller(db: Database, queue: JobQueue) -> None:
    hub = EventHub(db, poll_interval_s=0.03)
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    jobs = [await queue.submit("k", {}) for _ in range(20)]
    sinks = [await JobEventSink.open(db, writer, j.id) for j in jobs]
    subs = [hub.subscribe(j.id, 0) for j in jobs for _ in range(10)]  # 200 subscribers
    await hub.start()
    polls_before = hub.polls
    t0 = time.monotonic()

    async def produce() -> None:
        for i in range(20):
            for s in sinks:
                s.append("step.delta", {"i": i})
            await asyncio.sleep(0.02)
        for s in sinks:
            s.append("job.completed", {})
        await writer.flush()

    results = await asyncio.gather(*(_collect(s) for s in subs), produce())
    elapsed = time.monotonic() - t0
    for got in results[:-1]:
        assert got is not None and [e.seq for e in got] == list(range(1, 23))
    assert 0.0 <= hub.lag_quantile(0.5) <= hub.lag_quantile(0.99) < 5.0 and len(hub.recent_lag_s) > 0
    # one query per tick for everyone (plus the subscribers' single replay each), not one per subscriber
    assert hub.polls - polls_before < elapsed / 0.03 * 3 + 50
    await writer.stop()
    await hub.stop()


async def test_a_subscriber_that_came_before_the_hub_started_misses_nothing(
    db: Database, queue: JobQueue
) -> None:
    """The hub's feed starts after the newest id it finds at start; a subscriber replaying earlier
    must not lose what was committed in between (the hub's first read is held back here)."""
    from contextlib import asynccontextmanager

    hub = EventHub(db, poll_interval_s=0.01)
    reads = hub._read
    committed = asyncio.Event()

    @asynccontextmanager
    async def first_read_after_the_commit() -> Any:
        hub._read = reads
        await committed.wait()
        async with reads() as conn:
            yield conn

    hub._read = first_read_after_the_commit
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    job = await queue.submit("k", {})
    sink = await JobEventSink.open(db, writer, job.id)
    async with hub.subscribe(job.id, 0) as sub:  # starts the hub, whose first read waits
        assert (await sub.__anext__()).seq == 1  # replayed before the hub found its start
        sink.append("step.delta", {"i": 0})
        sink.append("job.completed", {})
        await writer.flush()  # committed before the hub's start point: only a resync finds them
        committed.set()
        rest = await _collect(sub)
    assert [e.seq for e in rest] == [2, 3]
    await writer.stop()
    await hub.stop()


async def test_slow_subscriber_overflow_recovers_from_database(db: Database, queue: JobQueue) -> None:
    hub = EventHub(db, poll_interval_s=0.01, buffer=20)
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    job = await queue.submit("k", {})
    sink = await JobEventSink.open(db, writer, job.id)
    async with hub.subscribe(job.id, 0) as sub:
        first = await sub.__anext__()
        for i in range(500):
            sink.append("step.delta", {"i": i})
        sink.append("job.completed", {})
        await writer.flush()
        await asyncio.sleep(0.1)  # the hub overflows this subscriber's small buffer
        rest = await _collect(sub)
    assert [e.seq for e in [first, *rest]] == list(range(1, 503))
    await writer.stop()
    await hub.stop()


async def test_wait_events_long_polls(db: Database) -> None:
    hub = EventHub(db, poll_interval_s=0.02)
    q = JobQueue(db, hub=hub)
    job = await q.submit("k", {})
    assert [e.seq for e in await q.wait_events(job.id, after=0, timeout_s=1)] == [1]
    t0 = time.monotonic()
    assert await q.wait_events(job.id, after=1, timeout_s=0.2) == []
    assert time.monotonic() - t0 >= 0.15

    async def later() -> None:
        await asyncio.sleep(0.1)
        await q.cancel(job.id)

    got, _ = await asyncio.gather(q.wait_events(job.id, after=1, timeout_s=5), later())
    assert [e.kind for e in got] == ["job.cancelled"]
    await hub.stop()


async def test_group_commit_beats_a_commit_per_step(tmp_path: Path) -> None:
    """The reason for the writer: on SQLite, 50 runs saving steps at once commit far faster together."""
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'gc.db'}")
    await db.migrate()
    value = {"text": "字" * 300}
    store = DurableCheckpoints(db, GroupCommitWriter(db))

    async def grouped(run: int) -> None:
        for i in range(20):
            await store.save(f"g{run}", f"s{i}", value)

    async def one_commit_each(run: int) -> None:
        for i in range(20):
            async with db.write() as conn:
                await conn.execute(
                    db.insert(checkpoints).values(run_id=f"b{run}", step=f"s{i}", value=value, created_at=0.0)
                )

    t0 = time.perf_counter()
    await asyncio.gather(*(grouped(r) for r in range(50)))
    t_grouped = time.perf_counter() - t0
    t0 = time.perf_counter()
    await asyncio.gather(*(one_commit_each(r) for r in range(50)))
    t_single = time.perf_counter() - t0
    commits = store.writer.commits
    await store.writer.stop()
    await db.close()
    # The saving is in the commits, which a wall-clock ratio alone shows only on a quiet machine
    # (it read 1.7 under a full suite's load): 1,000 saves in a few dozen commits, and faster.
    assert 0 < commits <= 1000 // 10, commits
    assert t_single > t_grouped, (t_single, t_grouped)


async def test_hub_delivers_rows_committed_out_of_id_order(db: Database, queue: JobQueue) -> None:
    """Postgres can commit id N after N+1; the hub must still deliver N (SQLite cannot, it just passes)."""
    hub = EventHub(db, poll_interval_s=0.02)
    a = await queue.submit("k", {})
    b = await queue.submit("k", {})
    await hub.start()
    async with hub.subscribe(a.id, 1) as sub_a, hub.subscribe(b.id, 1) as sub_b:
        following_a = asyncio.create_task(_collect(sub_a))
        await asyncio.sleep(0.1)  # its replay is done: only the hub can bring the event now
        if db.is_sqlite:
            async with db.write() as conn:
                await append_event(conn, a.id, "job.completed", {})
            async with db.write() as conn:
                await append_event(conn, b.id, "job.completed", {})
        else:
            slow_tx = await db._write.connect()  # holds an earlier id uncommitted
            trans = await slow_tx.begin()
            await append_event(slow_tx, a.id, "job.completed", {})
            async with db.write() as conn:
                await append_event(conn, b.id, "job.completed", {})
            got_b = await _collect(sub_b)
            assert [e.kind for e in got_b] == ["job.completed"]
            await asyncio.sleep(0.1)  # the hub has moved past the uncommitted id by now
            await trans.commit()
            await slow_tx.close()
        got_a = await following_a
        assert [(e.seq, e.kind) for e in got_a] == [(2, "job.completed")]
    await hub.stop()


async def test_events_are_committed_while_the_workers_loop_is_busy(db: Database, queue: JobQueue) -> None:
    """The event lag: a worker loop busy with streams must not delay the commit of its events."""
    job = await queue.submit("k", {})
    writer = GroupCommitWriter(db)
    await writer.start()
    sink = await JobEventSink.open(db, writer, job.id)
    for i in range(20):
        sink.append("step.delta", {"i": i})
    deadline = time.monotonic() + 30  # the loop does not turn while we wait, as under load
    while writer.rows_committed < 20 and time.monotonic() < deadline:
        time.sleep(0.01)  # noqa: ASYNC251 - blocking the loop is the point
    other = Database.from_url(db.url)
    try:
        async with other.read() as conn:
            committed = await read_events(conn, job.id, 0, 100)
    finally:
        await other.close()
    assert [e.data.get("i") for e in committed[1:]] == list(range(20))
    await writer.stop()


async def test_a_workers_commit_wakes_the_hub_by_datagram(db: Database, queue: JobQueue) -> None:
    """Another process's commit reaches subscribers at once, not at the next (here: 10 s) poll."""
    from storyloom.jobs.wake import WakeSender, listen_for_wakes, parse_wake_urls

    hub = EventHub(db, poll_interval_s=10.0, idle_interval_s=10.0)
    await hub.start()
    transport = await listen_for_wakes(hub)
    host, port = transport.get_extra_info("sockname")[:2]
    worker_db = Database.from_url(db.url)  # the worker process's own handle
    sender = WakeSender(parse_wake_urls(f"udp://{host}:{port}"))
    worker_db.add_commit_listener(sender)
    writer = GroupCommitWriter(worker_db)
    await writer.start()
    job = await queue.submit("k", {})
    try:
        async with hub.subscribe(job.id, after_seq=1) as sub:
            await asyncio.sleep(0.2)  # the subscription's replay is done; only a poll finds more
            sink = await JobEventSink.open(worker_db, writer, job.id)
            sink.append("step.delta", {"text": "hello"})
            async with asyncio.timeout(5):  # half the poll interval: only the datagram can do it
                got = await sub.__anext__()
            assert got.data == {"text": "hello"}
            assert sender.sent >= 1
    finally:
        await writer.stop()
        transport.close()
        sender.close()
        await worker_db.close()
        await hub.stop()


async def test_the_hubs_polls_never_wait_for_the_shared_read_pool(db: Database, queue: JobQueue) -> None:
    """500 streams opening at once each replay through the pool; live events must not queue behind."""
    from contextlib import AsyncExitStack

    hub = EventHub(db, poll_interval_s=0.02)
    await hub.start()  # as the service does
    job = await queue.submit("k", {})
    async with hub.subscribe(job.id, after_seq=0) as sub:
        assert (await sub.__anext__()).kind == "job.submitted"  # its replay is done
        pool = db._read.pool
        capacity = pool.size() + int(getattr(pool, "_max_overflow", 0))
        async with AsyncExitStack() as held:
            for _ in range(capacity):  # every shared connection busy, as in a burst of replays
                await held.enter_async_context(db.read())
            await db.transaction(lambda conn: append_event(conn, job.id, "step.delta", {"i": 1}))
            async with asyncio.timeout(5):  # a queued poll would wait for pool_timeout (30 s)
                got = await sub.__anext__()
        assert got.data == {"i": 1}
    await hub.stop()


async def test_streams_opening_together_share_their_reads_and_each_replays_exactly(
    db: Database, queue: JobQueue
) -> None:
    hub = EventHub(db, poll_interval_s=0.02)
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    jobs = [await queue.submit("k", {}) for _ in range(30)]
    long = jobs[0]  # more events than one replay page (500)
    sink = await JobEventSink.open(db, writer, long.id)
    for i in range(620):
        sink.append("step.delta", {"i": i})
    await writer.flush()
    requests = [(j.id, 0) for j in jobs] + [(long.id, 560), ("no-such-job", 0)]
    opened = await asyncio.gather(*(hub.open(job_id, after) for job_id, after in requests))
    assert hub._opener.batches == 1  # all opened in the same loop turn: one read
    assert opened[-1][0] is None and hub.subscriber_count == len(requests) - 1
    for j in jobs[1:]:
        sink_j = await JobEventSink.open(db, writer, j.id)
        sink_j.append("job.completed", {})
    sink.append("job.completed", {})
    await writer.flush()
    got = await asyncio.gather(*(_collect(sub) for job, sub in opened[:-1]))
    assert [e.seq for e in got[0]] == list(range(1, 623))  # the long job, past its first page
    assert [e.seq for e in got[-1]] == list(range(561, 623))  # the same job from 560
    for (job, _), events in zip(opened[1:-2], got[1:-1], strict=True):
        assert job is not None and [(e.seq, e.kind) for e in events] == [
            (1, "job.submitted"),
            (2, "job.completed"),
        ]
    await writer.stop()
    await hub.stop()


async def test_a_stream_nobody_reads_is_let_go_when_its_job_ends(db: Database, queue: JobQueue) -> None:
    """A client gone before its response began never iterates its subscription: the hub drops it."""
    hub = EventHub(db, poll_interval_s=0.02)
    job = await queue.submit("k", {})
    _, sub = await hub.open(job.id, 0)
    assert hub.subscriber_count == 1
    await db.transaction(lambda conn: append_event(conn, job.id, "job.completed", {}))
    async with asyncio.timeout(10):
        while hub.subscriber_count:  # noqa: ASYNC110 - the hub has no event for this
            await asyncio.sleep(0.02)
    assert [e.kind for e in await _collect(sub)] == ["job.submitted", "job.completed"]  # still readable
    await hub.stop()


def test_wake_urls_are_checked() -> None:
    import pytest

    from storyloom.errors import ConfigError
    from storyloom.jobs.wake import parse_wake_urls

    assert parse_wake_urls("udp://127.0.0.1:7001, udp://localhost:7002") == [
        ("127.0.0.1", 7001),
        ("localhost", 7002),
    ]
    for bad in ("tcp://127.0.0.1:7001", "udp://127.0.0.1", "udp://:7001", "udp://h:notaport"):
        with pytest.raises(ConfigError, match="udp://"):
            parse_wake_urls(bad)


async def test_the_stream_of_a_job_just_submitted_here_is_served_without_a_read(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = EventHub(db, poll_interval_s=0.02)
    await hub.start()
    queue = JobQueue(db, hub=hub)
    job = await queue.submit("k", {"x": 1})
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    sink = await JobEventSink.open(db, writer, job.id)

    def no_read(*_: object) -> None:
        raise AssertionError("the early stream read the database")

    monkeypatch.setattr(db, "fetch", no_read)
    monkeypatch.setattr(db, "read", no_read)
    opened, sub = await hub.open(job.id, 0)
    assert opened is not None and opened.id == job.id
    sink.append("step.started", {}, step="a")
    sink.append("job.completed", {})
    await writer.flush()
    got = await _collect(sub)
    assert [(e.seq, e.kind) for e in got] == [(1, "job.submitted"), (2, "step.started"), (3, "job.completed")]
    assert got[0].data == {"kind": "k", "priority": 5}  # as stored
    assert hub.subscriber_count == 0
    await writer.stop()
    await hub.stop()


async def test_an_early_stream_nobody_claims_expires_and_a_late_one_reads(db: Database) -> None:
    hub = EventHub(db, poll_interval_s=0.01, early_ttl_s=0.05)
    await hub.start()
    queue = JobQueue(db, hub=hub)
    job = await queue.submit("k", {})
    assert hub.subscriber_count == 1
    for _ in range(500):
        if not hub.subscriber_count:
            break
        await asyncio.sleep(0.01)
    assert hub.subscriber_count == 0
    opened, sub = await hub.open(job.id, 0)  # from the database now
    assert opened is not None
    async with sub:
        assert (await sub.__anext__()).seq == 1
    await hub.stop()


async def test_a_repeated_submission_or_a_resume_does_not_use_an_early_stream(db: Database) -> None:
    hub = EventHub(db, poll_interval_s=0.01)
    await hub.start()
    queue = JobQueue(db, hub=hub)
    job = await queue.submit("k", {}, idempotency_key="same")
    again = await queue.submit("k", {}, idempotency_key="same")
    assert again.id == job.id and hub.subscriber_count == 1  # the repeat let its own go
    writer = GroupCommitWriter(db, on_commit=hub.wake)
    sink = await JobEventSink.open(db, writer, job.id)
    sink.append("step.started", {}, step="a")
    await writer.flush()
    _, sub = await hub.open(job.id, 1)  # resuming after seq 1: the early stream is dropped
    async with sub:
        assert (await sub.__anext__()).seq == 2
    assert hub.subscriber_count == 0
    await writer.stop()
    await hub.stop()


async def test_early_streams_are_bounded(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    import storyloom.jobs.events as events_module

    monkeypatch.setattr(events_module, "_MAX_EARLY", 2)
    hub = EventHub(db, poll_interval_s=0.01)
    await hub.start()
    queue = JobQueue(db, hub=hub)
    first = await queue.submit("k", {})
    for _ in range(2):
        await queue.submit("k", {})
    assert hub.subscriber_count == 2  # the oldest was let go
    _, sub = await hub.open(first.id, 0)  # and reads from the database
    async with sub:
        assert (await sub.__anext__()).seq == 1
    await hub.stop()
