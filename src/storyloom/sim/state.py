"""The live state of one simulator: its config, quota window, fault RNG and counters.

All of it is touched only from the server's event loop, so plain ints and dicts suffice; the
embedded handle hops onto that loop to read or change it from another thread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from storyloom.sim.config import FAULT_KINDS, SimConfig
from storyloom.sim.prefix_cache import PrefixCache
from storyloom.sim.quota import QuotaWindow
from storyloom.sim.search import SearchState

__all__ = ["SimState", "SimStats"]

_MAX_USERS = 10_000  # bound on distinct `user` values counted, so a long run cannot grow without limit
_REJECT_CAUSES = ("rpm", "tpm", "concurrency", "injected")


@dataclass(slots=True)
class _ModelCounts:
    requests: int = 0
    admitted: int = 0
    completed: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class SimStats:
    """Counters since start or the last reset."""

    requests: int = 0
    admitted: int = 0
    completed: int = 0
    bad_requests: int = 0
    unauthorized: int = 0
    client_disconnects: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_REJECT_CAUSES, 0))
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    per_model: dict[str, _ModelCounts] = field(default_factory=dict)
    per_user: dict[str, int] = field(default_factory=dict)

    def model(self, name: str) -> _ModelCounts:
        counts = self.per_model.get(name)
        if counts is None:
            counts = self.per_model[name] = _ModelCounts()
        return counts

    def count_user(self, user: Any) -> None:
        if isinstance(user, str) and (user in self.per_user or len(self.per_user) < _MAX_USERS):
            self.per_user[user] = self.per_user.get(user, 0) + 1


class SimState:
    """Config + quota window + fault RNG + stats of one simulator instance."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.window = QuotaWindow()
        self.fault_rng = random.Random(config.seed)
        self.stats = SimStats()
        self.prefix_cache = PrefixCache(block_chars=config.prompt_cache_block_chars)
        self.search = SearchState(rng=random.Random(config.seed + 1))

    def configure(self, patch: dict[str, Any]) -> SimConfig:
        """Deep-merge `patch` into the live config (ConfigError if invalid); a new seed reseeds faults."""
        new = self.config.patched(patch)
        if new.seed != self.config.seed:
            self.fault_rng = random.Random(new.seed)
        self.config = new
        return new

    def reset_stats(self) -> None:
        self.stats = SimStats()
        self.search = SearchState(rng=random.Random(self.config.seed + 1))
        self.window.reset_maxima()
        self.fault_rng = random.Random(self.config.seed)

    def draw_fault(self, model: str, json_wanted: bool, tools_offered: bool = False) -> str | None:
        """One fault kind or None: a single uniform draw laid over the kinds' rates in order."""
        rates = self.config.fault_rates(model)
        u = self.fault_rng.random()
        edge = 0.0
        for kind in FAULT_KINDS:
            rate = getattr(rates, kind)
            if rate <= 0.0:
                continue
            edge += rate
            if u < edge or rate >= 1.0:
                if kind in ("prose_json", "prose_only") and not json_wanted:
                    return None
                if kind == "broken_tool_args" and not tools_offered:
                    return None
                return kind
        return None

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything /stats reports, as plain JSON."""
        s = self.stats
        w = self.window
        window_requests, window_tokens = w.current(now, self.config.window_s)
        return {
            "requests": s.requests,
            "admitted": s.admitted,
            "completed": s.completed,
            "bad_requests": s.bad_requests,
            "unauthorized": s.unauthorized,
            "client_disconnects": s.client_disconnects,
            "rejected_429": dict(s.rejected),
            "rejected_429_total": sum(s.rejected.values()),
            "faults": dict(s.faults),
            "in_flight": w.in_flight,
            "max_concurrency": w.max_in_flight,
            "prompt_tokens": s.prompt_tokens,
            "cached_prompt_tokens": s.cached_prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens,
            "per_model": {
                name: {
                    "requests": c.requests,
                    "admitted": c.admitted,
                    "completed": c.completed,
                    "completion_tokens": c.completion_tokens,
                }
                for name, c in s.per_model.items()
            },
            "per_user": dict(s.per_user),
            "window": {
                "window_s": self.config.window_s,
                "mode": self.config.quota.mode,
                "current_requests": window_requests,
                "current_tokens": window_tokens,
                "max_window_requests": w.max_window_requests,
                "max_window_tokens": w.max_window_tokens,
                "over_quota_admitted": w.over_quota_admitted,
            },
            "max_window_requests": w.max_window_requests,
            "max_window_tokens": w.max_window_tokens,
            "over_quota_admitted": w.over_quota_admitted,
            "search": self.search.snapshot(now, self.config.search),
        }
