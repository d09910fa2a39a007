"""Adaptive concurrency per deployment (AIMD), inside the configured maximum.

Seed 002: "error rate > 0.2 → lower, fast answers → raise". Multiplicative decrease on a 429, on an
error rate above 0.2 over the recent calls, or when time to first token grows past twice its
baseline (a provider that stalls instead of answering 429); additive increase (+1 per window of
successful calls) while answers stay fast. Decreases are spaced by `cooldown_s` so one burst of
429s halves the limit once, not twenty times.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["AdaptiveLimit"]


class AdaptiveLimit:
    def __init__(
        self,
        max_limit: int | None,
        *,
        min_limit: int = 1,
        decrease: float = 0.7,
        error_rate: float = 0.2,
        window: int = 20,
        cooldown_s: float = 1.0,
    ) -> None:
        self.max_limit = max_limit
        self.min_limit = min_limit
        self._limit = float(max_limit) if max_limit is not None else 0.0
        self._decrease = decrease
        self._error_rate = error_rate
        self._recent: deque[bool] = deque(maxlen=window)
        self._cooldown_s = cooldown_s
        self._last_decrease = 0.0
        self._ttft_base: float | None = None
        self._ttft_avg: float | None = None

    @property
    def limit(self) -> int | None:
        """The concurrency to allow now; None when no maximum is configured (adaptation is off)."""
        return None if self.max_limit is None else max(self.min_limit, int(self._limit))

    def _cut(self, now: float) -> None:
        if now - self._last_decrease >= self._cooldown_s:
            self._limit = max(float(self.min_limit), self._limit * self._decrease)
            self._last_decrease = now

    def on_rate_limited(self) -> None:
        self._recent.append(False)
        if self.max_limit is not None:
            self._cut(time.monotonic())

    def on_failure(self) -> None:
        self._recent.append(False)
        if self.max_limit is not None and len(self._recent) >= 5:
            bad = self._recent.count(False) / len(self._recent)
            if bad > self._error_rate:
                self._cut(time.monotonic())

    def on_success(self, ttft_s: float | None) -> None:
        self._recent.append(True)
        if self.max_limit is None:
            return
        if ttft_s is not None:
            self._ttft_avg = ttft_s if self._ttft_avg is None else 0.8 * self._ttft_avg + 0.2 * ttft_s
            # The baseline follows the fastest answers down at once and up only slowly.
            base = self._ttft_base
            self._ttft_base = ttft_s if base is None or ttft_s < base else base + 0.01 * (ttft_s - base)
            if self._ttft_base > 0 and self._ttft_avg > 2.0 * self._ttft_base + 0.05:
                self._cut(time.monotonic())
                return
        self._limit = min(float(self.max_limit), self._limit + 1.0 / max(self._limit, 1.0))
