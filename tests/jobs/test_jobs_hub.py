"""Event-hub backends (jobs/hub.py): Redis pub/sub wakes another process's hub at once; losing
Redis loses nothing (the hub polls fast again and reads what came meanwhile from the log)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from storyloom.errors import ConfigError
from storyloom.jobs import JobQueue
from storyloom.jobs.durable import GroupCommitWriter, JobEventSink
from storyloom.jobs.events import EventHub, Subscription
from storyloom.jobs.hub import DEFAULT_CHANNEL, RedisHubBackend, hub_backend_from_url
from storyloom.store import Database
from support.processes import RedisServer

pytestmark = pytest.mark.redis


def test_backends_are_chosen_by_url() -> None:
    assert hub_backend_from_url(None) is None
    assert hub_backend_from_url("") is None
    assert hub_backend_from_url("poll://") is None
    backend = hub_backend_from_url("redis://127.0.0.1:6379/2?channel=blue")
    assert isinstance(backend, RedisHubBackend)
    assert backend.channel == "blue" and backend.url == "redis://127.0.0.1:6379/2"
    plain = hub_backend_from_url("redis://10.0.0.5:6379/0")
    assert isinstance(plain, RedisHubBackend) and plain.channel == DEFAULT_CHANNEL
    with pytest.raises(ConfigError, match="STORYLOOM_EVENT_HUB_URL must be poll:// or redis://"):
        hub_backend_from_url("kafka://broker:9092")


async def _next(sub: Subscription, within_s: float) -> tuple[int, float]:
    started = time.monotonic()
    async with asyncio.timeout(within_s):
        event = await anext(sub)
    return event.seq, time.monotonic() - started


async def _until(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.05)


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


async def test_redis_wakes_another_process_hub_and_losing_it_loses_nothing(
    db: Database, db_url: str, redis_server: RedisServer
) -> None:
    # The "worker" side: its own database handle, its commits published to Redis.
    publisher = RedisHubBackend(redis_server.url)
    db.add_commit_listener(publisher.notify)
    writer = GroupCommitWriter(db)
    job = await JobQueue(db).submit("hub-test", {})
    sink = await JobEventSink.open(db, writer, job.id)
    # The "API node" side: another handle, a hub that, with Redis live, polls only every 30 s.
    other = Database.from_url(db_url, pool_size=2)
    hub = EventHub.from_url(other, redis_server.url, poll_interval_s=0.05, backed_poll_interval_s=30.0)
    await hub.start()
    try:
        await _until(lambda: hub.backend is not None and hub.backend.live)
        sub = hub.subscribe(job.id, 1)
        seen: list[int] = []

        async def emit_and_receive(n: int, within_s: float) -> float:
            worst = 0.0
            for i in range(n):
                sink.append("step.delta", {"i": i}, step="s")
                await writer.flush()
                seq, took = await _next(sub, within_s)
                seen.append(seq)
                worst = max(worst, took)
            return worst

        # Woken through Redis: far sooner than the 30 s safety poll.
        assert await emit_and_receive(3, 5.0) < 2.0
        assert publisher.published >= 1 and hub.backend is not None
        assert isinstance(hub.backend, RedisHubBackend) and hub.backend.received >= 1

        redis_server.stop()
        await _until(lambda: not hub.backend.live)  # type: ignore[union-attr]
        # Redis away: the hub polls fast again, the commits do not wait on Redis, nothing is lost.
        await emit_and_receive(3, 5.0)

        redis_server.start()
        await _until(lambda: hub.backend.live, timeout_s=15)  # type: ignore[union-attr]
        before = publisher.published
        assert await emit_and_receive(3, 5.0) < 2.0
        await _until(lambda: publisher.published > before)  # publishing resumed after the outage
        assert seen == list(range(2, 11))  # every event, once, in order
        sub.close()
    finally:
        await hub.stop()
        await writer.stop()
        await publisher.aclose()
        await other.close()
