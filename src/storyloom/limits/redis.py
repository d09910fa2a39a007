"""Limits shared by every process on every machine through Redis: one Lua script, atomic per call.

The script (`limits.lua`) applies the same rules as `state.py` to the same JSON document and reads
the clock with Redis `TIME`, so machines with skewed clocks still agree.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from storyloom.errors import ProviderConnectionError
from storyloom.limits.base import LimitBackend
from storyloom.limits.budgets import BudgetUsage, PeriodSpec
from storyloom.limits.state import CLAIM_TTL_S, Ask, BreakerPolicy, Claim, Denied, Grant, Outcome, State

__all__ = ["RedisBackend"]

_SCRIPT = resources.files("storyloom.limits").joinpath("limits.lua").read_text(encoding="utf-8")


class RedisBackend(LimitBackend):
    poll_s = 0.02

    def __init__(self, url: str, policy: BreakerPolicy, *, prefix: str = "storyloom:llm:") -> None:
        super().__init__(policy)
        self._redis = aioredis.Redis.from_url(url)
        self._script = self._redis.register_script(_SCRIPT)
        self._prefix = prefix
        self._policy = dataclasses.asdict(policy)

    def _key(self, name: str) -> str:
        return f"{self._prefix}{name}"

    async def _call(self, keys: list[str], cmd: str, args: dict[str, Any]) -> Any:
        args["key_ttl_s"] = max(3600, int(args.get("lease_ttl_s", 0) * 4))
        try:
            return await self._script(keys=keys, args=[cmd, json.dumps(args)])
        except RedisError as exc:
            # Translated at the boundary: the gateway treats it like an unreachable provider.
            raise ProviderConnectionError(f"the limits store (Redis) failed: {exc}") from exc

    async def _acquire(
        self, asks: list[Ask], cost: float, lease_id: str, lease_ttl_s: float, now: float, claim: Claim | None
    ) -> Grant | Denied:
        raw = await self._call(
            [self._key(a.name) for a in asks],
            "acquire",
            {
                "asks": [dataclasses.asdict(a) for a in asks],
                "cost": cost,
                "lease_id": lease_id,
                "lease_ttl_s": lease_ttl_s,
                "claim": dataclasses.asdict(claim) if claim is not None else None,
                "claim_ttl_s": CLAIM_TTL_S,
                "policy": self._policy,
            },
        )
        doc = json.loads(raw)
        if doc["granted"]:
            return Grant(doc["deployment"], lease_id, bool(doc["probe"]))
        wait = float(doc["wait_s"])
        return Denied(None if wait < 0 else wait, str(doc["reason"]))

    async def _release(self, ask: Ask, lease_id: str, outcome: Outcome, jitter: float, now: float) -> None:
        await self._call(
            [self._key(ask.name)],
            "release",
            {
                "ask": dataclasses.asdict(ask),
                "lease_id": lease_id,
                "outcome": dataclasses.asdict(outcome),
                "policy": self._policy,
                "jitter": jitter,
            },
        )

    async def _renew(self, leases: dict[str, list[str]], lease_ttl_s: float, now: float) -> None:
        names = list(leases)
        await self._call(
            [self._key(n) for n in names],
            "renew",
            {"leases": [leases[n] for n in names], "lease_ttl_s": lease_ttl_s},
        )

    async def _reserve_budget(
        self,
        specs: list[PeriodSpec],
        amount_usd: float,
        amount_tokens: int,
        hold_id: str,
        ttl_s: float,
        now: float,
    ) -> tuple[int, BudgetUsage]:
        raw = await self._call(
            [self._key(s.key) for s in specs],
            "budget_reserve",
            {
                "specs": [{"usd": s.usd, "tokens": s.tokens, "expires_at": s.expires_at} for s in specs],
                "amount": amount_usd,
                "tokens": amount_tokens,
                "hold_id": hold_id,
                "lease_ttl_s": ttl_s,
            },
        )
        doc = json.loads(raw)
        index = int(doc["index"])
        if index < 0:
            return -1, BudgetUsage()
        return index, _usage(doc)

    async def _settle_budget(
        self, keys: list[str], hold_id: str, actual_usd: float, actual_tokens: int, now: float
    ) -> None:
        await self._call(
            [self._key(k) for k in keys],
            "budget_settle",
            {"hold_id": hold_id, "actual": actual_usd, "tokens": actual_tokens},
        )

    async def _budget_usage(self, key: str, now: float) -> BudgetUsage:
        return _usage(json.loads(await self._call([self._key(key)], "budget_usage", {})))

    async def _snapshot(self, names: list[str]) -> dict[str, State]:
        raw = await self._call([self._key(n) for n in names], "snapshot", {})
        docs = json.loads(raw)
        return dict(zip(names, docs, strict=True))

    async def aclose(self) -> None:
        await self._redis.aclose()


def _usage(doc: dict[str, Any]) -> BudgetUsage:
    return BudgetUsage(
        float(doc["spent"]), float(doc["held"]), int(doc["spent_tokens"]), int(doc["held_tokens"])
    )
