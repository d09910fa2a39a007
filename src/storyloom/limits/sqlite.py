"""Limits shared by every process on one machine through one SQLite file; no server to run.

Each operation is one short `BEGIN IMMEDIATE` transaction (read the deployments' rows, apply the
rules of `state.py`, write them back), so processes serialize on SQLite's write lock for tens of
microseconds. The stdlib `sqlite3` runs on one dedicated thread per process: aiosqlite would add a
thread hop per statement, and we need several statements per transaction. `synchronous=OFF`: this
state is about the next minute; after a power loss, stale buckets and expired leases are harmless.
The documents go through `fastjson` (orjson): a deployment's document holds a lease per call in
flight on every process, and the stdlib's encoder and decoder on it, twice per call, cost more than
the transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from storyloom import fastjson
from storyloom.errors import ConfigError
from storyloom.limits import budgets
from storyloom.limits import state as rules
from storyloom.limits.base import LimitBackend
from storyloom.limits.budgets import BudgetUsage, PeriodSpec
from storyloom.limits.state import Ask, BreakerPolicy, Claim, Denied, Grant, Outcome, State

__all__ = ["SqliteBackend"]

T = TypeVar("T")

_SCHEMA = "CREATE TABLE IF NOT EXISTS llm_limits (name TEXT PRIMARY KEY, state TEXT NOT NULL)"


class SqliteBackend(LimitBackend):
    poll_s = 0.02

    def __init__(self, path: str, policy: BreakerPolicy) -> None:
        super().__init__(policy)
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the directory of the limits file {self.path}: {exc}.") from exc
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storyloom-limits")
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _txn(self, names: list[str], apply: Any, new: Any = rules.new_state, sweep: bool = False) -> Any:
        """BEGIN IMMEDIATE; load `names`; `apply(states, now)`; write back; COMMIT.

        `now` is read after the write lock is held, so the processes' clocks are applied in commit
        order (a `now` taken before waiting for the lock could move a bucket back in time).
        `sweep`: when a document is new (a new budget period), delete those of periods long over.
        A `new` that returns None leaves missing documents missing (and unwritten)."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        now = time.time()
        try:
            marks = ",".join("?" * len(names))
            rows = conn.execute(
                f"SELECT name, state FROM llm_limits WHERE name IN ({marks})", names
            ).fetchall()
            states: dict[str, State] = {n: fastjson.loads(s) for n, s in rows}
            if sweep and len(states) < len(set(names)):
                conn.execute(
                    "DELETE FROM llm_limits WHERE name LIKE 'budget:%' "
                    "AND json_extract(state, '$.expires_at') < ?",
                    (now,),
                )
            for n in names:
                states.setdefault(n, new())
            result = apply(states, now)
            conn.executemany(
                "INSERT INTO llm_limits(name, state) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET state = excluded.state",
                [(n, fastjson.dumps(st)) for n, st in states.items() if st is not None],
            )
            conn.execute("COMMIT")
            return result
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _acquire(
        self, asks: list[Ask], cost: float, lease_id: str, lease_ttl_s: float, now: float, claim: Claim | None
    ) -> Grant | Denied:
        def apply(states: dict[str, State], now: float) -> Grant | Denied:
            return rules.acquire(states, asks, cost, lease_id, lease_ttl_s, now, claim, self.policy)

        result: Grant | Denied = await self._run(self._txn, [a.name for a in asks], apply)
        return result

    async def _release(self, ask: Ask, lease_id: str, outcome: Outcome, jitter: float, now: float) -> None:
        def apply(states: dict[str, State], now: float) -> None:
            rules.release(states[ask.name], ask, lease_id, outcome, self.policy, jitter, now)

        await self._run(self._txn, [ask.name], apply)

    async def _renew(self, leases: dict[str, list[str]], lease_ttl_s: float, now: float) -> None:
        def apply(states: dict[str, State], now: float) -> None:
            for name, ids in leases.items():
                rules.renew(states[name], ids, lease_ttl_s, now)

        await self._run(self._txn, list(leases), apply)

    async def _reserve_budget(
        self,
        specs: list[PeriodSpec],
        amount_usd: float,
        amount_tokens: int,
        hold_id: str,
        ttl_s: float,
        now: float,
    ) -> tuple[int, BudgetUsage]:
        keys = [s.key for s in specs]

        def apply(states: dict[str, State], now: float) -> tuple[int, BudgetUsage]:
            docs = [states[k] for k in keys]
            return budgets.budget_reserve(docs, specs, amount_usd, amount_tokens, hold_id, ttl_s, now)

        result: tuple[int, BudgetUsage] = await self._run(
            self._txn, keys, apply, budgets.new_budget_state, True
        )
        return result

    async def _settle_budget(
        self, keys: list[str], hold_id: str, actual_usd: float, actual_tokens: int, now: float
    ) -> None:
        def apply(states: dict[str, State | None], now: float) -> None:
            for k in keys:
                doc = states[k]
                if doc is not None:  # None: a period long over, already swept; its late cost is moot
                    budgets.budget_settle(doc, hold_id, actual_usd, actual_tokens, now)

        await self._run(self._txn, keys, apply, lambda: None)

    async def _budget_usage(self, key: str, now: float) -> BudgetUsage:
        def read() -> BudgetUsage:
            row = self._connect().execute("SELECT state FROM llm_limits WHERE name = ?", (key,)).fetchone()
            return (
                BudgetUsage() if row is None else budgets.budget_totals(fastjson.loads(row[0]), time.time())
            )

        result: BudgetUsage = await self._run(read)
        return result

    async def _snapshot(self, names: list[str]) -> dict[str, State]:
        result: dict[str, State] = await self._run(self._txn, names, lambda states, now: dict(states))
        return result

    async def aclose(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(close)
        self._pool.shutdown(wait=False)
