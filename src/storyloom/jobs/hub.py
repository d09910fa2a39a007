"""Event-hub backends: how the processes of a deployment tell each other "events were committed".

The database stays the truth: an `EventHub` always reads the events themselves from `job_events`,
in order, by id. A backend carries only the wake-up, so the hub of an API node on another machine
polls at once instead of at its next tick. Losing the backend therefore loses nothing: the hub
sees `live` turn False, goes back to polling every `poll_interval_s`, and whatever was committed
meanwhile is read from the log at the next poll (the hub reads by id, so nothing is skipped). With
a live backend the hub polls only every `backed_poll_interval_s`, a safety net for a lost message.

Selected by URL (`STORYLOOM_EVENT_HUB_URL`, `EventHub.from_url`):

- unset, empty or `poll://`: no backend (one machine: `serve` adds its UDP wake-ups, jobs/wake.py)
- `redis://host:6379/0[?channel=name]` (also `rediss://`, `unix://`): Redis pub/sub

A backend is a `HubBackend`; docs/EXTENDING.md says how to add one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

from storyloom.errors import ConfigError
from storyloom.logs import get_logger

__all__ = ["DEFAULT_CHANNEL", "HubBackend", "RedisHubBackend", "hub_backend_from_url"]

DEFAULT_CHANNEL = "storyloom:events"
_RETRY_S = 1.0  # between attempts to reach a lost backend
_log = get_logger("storyloom.jobs.hub")


class HubBackend(Protocol):
    """Wake-ups across processes and machines. `notify` is every process's commit listener
    (`Database.add_commit_listener`: on the write thread, quick, never raising); `run` is the
    listening side of a process with an `EventHub`, until cancelled, calling `wake()` for every
    notification and once after each (re)connection, so a gap is read up at once."""

    name: str

    @property
    def live(self) -> bool:
        """Whether wake-ups arrive now (False: the hub polls at its fast interval)."""
        ...

    def notify(self) -> None: ...

    async def run(self, wake: Callable[[], None]) -> None: ...

    async def aclose(self) -> None: ...


def hub_backend_from_url(url: str | None) -> HubBackend | None:
    """The backend `url` names, None for polling alone; a ConfigError sentence for a wrong URL."""
    if url is None or not url.strip() or url.strip() == "poll://":
        return None
    parts = urlsplit(url.strip())
    if parts.scheme in ("redis", "rediss", "unix"):
        query = parse_qs(parts.query)
        channel = query.pop("channel", [DEFAULT_CHANNEL])[0]
        rest = "&".join(f"{k}={v[0]}" for k, v in query.items())
        return RedisHubBackend(urlunsplit(parts._replace(query=rest)), channel=channel)
    raise ConfigError(f"STORYLOOM_EVENT_HUB_URL must be poll:// or redis://host:6379/0, not {url.strip()!r}.")


class RedisHubBackend:
    """Redis pub/sub: one PUBLISH per burst of commits, one SUBSCRIBE per process with a hub.

    Publishing happens on a thread of its own with a blocking client: `notify` runs on the write
    thread and only sets a flag, so a slow or dead Redis never holds a commit up, and a burst of
    commits while one PUBLISH is in flight costs one more, not one each."""

    name = "redis"

    def __init__(self, url: str, *, channel: str = DEFAULT_CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self._live = False
        self._pending = threading.Event()
        self._closed = False
        self._publisher: threading.Thread | None = None
        self._lock = threading.Lock()
        self.published = 0  # PUBLISH commands sent, for tests and metrics
        self.received = 0

    @property
    def live(self) -> bool:
        return self._live

    def notify(self) -> None:
        if self._publisher is None:
            with self._lock:
                if self._publisher is None and not self._closed:
                    self._publisher = threading.Thread(
                        target=self._publish_loop, name="event-hub-publish", daemon=True
                    )
                    self._publisher.start()
        self._pending.set()

    def _publish_loop(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        failing = False
        try:
            while True:
                self._pending.wait()
                if self._closed:
                    return
                self._pending.clear()
                try:
                    client.publish(self.channel, b"w")
                    self.published += 1
                    if failing:
                        _log.info("event_hub_publish_recovered", backend=self.name)
                    failing = False
                except (redis.RedisError, OSError) as exc:
                    if not failing:  # once per outage: the hubs' polling covers it meanwhile
                        _log.warning("event_hub_publish_failed", backend=self.name, error=type(exc).__name__)
                    failing = True
                    self._pending.wait(_RETRY_S)  # not a busy loop while Redis is away
        finally:
            client.close()

    async def run(self, wake: Callable[[], None]) -> None:
        import redis.asyncio as aredis
        from redis.exceptions import RedisError

        lost_logged = False
        while True:
            client = aredis.Redis.from_url(
                self.url, socket_connect_timeout=2.0, socket_keepalive=True, health_check_interval=5
            )
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self._live = True
                if lost_logged:
                    _log.info("event_hub_backend_recovered", backend=self.name)
                lost_logged = False
                wake()  # whatever came while we were away is read from the log now
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.received += 1
                        wake()
            except (RedisError, OSError) as exc:
                if not lost_logged:
                    _log.warning("event_hub_backend_lost", backend=self.name, error=type(exc).__name__)
                lost_logged = True
            finally:
                self._live = False
                with contextlib.suppress(Exception):
                    await client.aclose()
            wake()  # poll now: the notification that would have come may be lost
            await asyncio.sleep(_RETRY_S)

    async def aclose(self) -> None:
        self._closed = True
        self._pending.set()
        publisher = self._publisher
        if publisher is not None:
            await asyncio.to_thread(publisher.join, 5.0)
