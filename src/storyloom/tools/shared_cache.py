"""The second level of the tool cache, shared by every process: a SQLite file or Redis by URL.

The in-process `ToolCache` answers first (no I/O); on its miss this one is asked, so an answer one
worker paid for serves the conversations of every worker for its TTL (seed 003: search answers
for 600 s) instead of each process paying once. Entries keep `stored_at` and `fresh_until` and
live `stale_factor` × TTL, so a degraded call can still return an old answer from any process.

Best effort: a store that fails (Redis down, a locked file) is logged and skipped, never an
error of the call: the tool is asked instead, under its limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from storyloom.tools.cache import CacheEntry

__all__ = ["SharedCache", "shared_cache"]

log = logging.getLogger(__name__)


class SharedCache:
    """Base: `get` (fresh or stale entry, or None), `put`, `aclose`; subclasses store the JSON."""

    stale_factor = 6.0

    async def get(self, key: str) -> CacheEntry | None:
        try:
            raw = await self._get(key)
        except Exception as exc:  # best effort: see the module doc
            log.warning("shared tool cache read failed: %s", exc)
            return None
        if raw is None:
            return None
        doc = json.loads(raw)
        return CacheEntry(doc["output"], doc["stored_at"], doc["fresh_until"], doc["keep_until"])

    async def put(self, key: str, output: Any, ttl_s: float) -> None:
        now = time.time()
        keep_s = ttl_s * self.stale_factor
        doc = {"output": output, "stored_at": now, "fresh_until": now + ttl_s, "keep_until": now + keep_s}
        try:
            await self._put(key, json.dumps(doc, ensure_ascii=False, default=str), keep_s)
        except Exception as exc:
            log.warning("shared tool cache write failed: %s", exc)

    async def aclose(self) -> None:
        return None

    async def _get(self, key: str) -> str | None:
        raise NotImplementedError

    async def _put(self, key: str, value: str, keep_s: float) -> None:
        raise NotImplementedError


class SqliteSharedCache(SharedCache):
    """Every process of one machine, through one file (WAL; one short statement per operation)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storyloom-tool-cache")
        self._conn: sqlite3.Connection | None = None
        self._writes = 0

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tool_cache (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                "expires_at REAL NOT NULL)"
            )
            self._conn = conn
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _read(self, key: str) -> str | None:
        row = (
            self._db()
            .execute("SELECT value FROM tool_cache WHERE key = ? AND expires_at > ?", (key, time.time()))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _write(self, key: str, value: str, keep_s: float) -> None:
        db = self._db()
        now = time.time()
        db.execute("INSERT OR REPLACE INTO tool_cache VALUES (?, ?, ?)", (key, value, now + keep_s))
        self._writes += 1
        if self._writes % 500 == 0:  # bounded growth: drop what expired
            db.execute("DELETE FROM tool_cache WHERE expires_at <= ?", (now,))

    async def _get(self, key: str) -> str | None:
        result: str | None = await self._run(self._read, key)
        return result

    async def _put(self, key: str, value: str, keep_s: float) -> None:
        await self._run(self._write, key, value, keep_s)

    async def aclose(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(close)
        self._pool.shutdown(wait=False)


class RedisSharedCache(SharedCache):
    """Every machine: one key per entry with its own expiry (`SET ... PX`)."""

    def __init__(self, url: str, prefix: str = "storyloom:tool-cache:") -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url)
        self._prefix = prefix

    async def _get(self, key: str) -> str | None:
        raw = await self._redis.get(self._prefix + key)
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def _put(self, key: str, value: str, keep_s: float) -> None:
        await self._redis.set(self._prefix + key, value, px=max(1, int(keep_s * 1000)))

    async def aclose(self) -> None:
        await self._redis.aclose()


def shared_cache(url: str) -> SharedCache | None:
    """The shared level for a limits-style URL: None for `memory://` (one process needs none)."""
    if url.startswith("memory:"):
        return None
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
        return SqliteSharedCache(str(Path(path).with_name(Path(path).stem + "-tool-cache.db")))
    if url.startswith(("redis:", "rediss:", "unix:")):
        return RedisSharedCache(url)
    return None
