"""Adaptive time-to-first-token deadlines, one per (deployment, provider model), from observed TTFTs.

A provider that hangs (accepts the request and says nothing) costs each hung call its whole
first-token deadline. With a fixed 60 s deadline, 2% hangs stalled a chapter for a minute about
once in six chapters (issue 10). The deadline here is `max(floor_s, factor × p-th percentile)` of
the recent first tokens, capped by the configured `ttft_timeout_s`: a second or three for a
provider that answers in half a second, still the full cap before enough samples exist.

Why a deadline and not hedging (a second attempt while the first is still silent): a hedge keeps
two requests in flight for one call, so it pays the prompt twice, counts twice against TPM and
concurrency, and when a provider slows down as a whole every call crosses the percentile at once
and the hedges double the load on the provider that is already slow. A deadline keeps exactly one
attempt in flight; a hang then costs the deadline plus one retry.

What keeps a deadline from cutting off a provider that got slower for real: each retry of a call
doubles its deadline (up to the cap), so a call whose first token now takes 10 s still gets it on
the third attempt and teaches the tracker; and when timeouts at the adaptive deadline become
frequent (more than `widen_above` of recent attempts), the deadline doubles until they are rare.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["FirstTokenDeadline", "TtftPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TtftPolicy:
    adaptive: bool = True
    factor: float = 3.0
    percentile: float = 0.99
    floor_s: float = 2.0
    min_samples: int = 20
    window: int = 200  # first tokens remembered
    widen_above: float = 0.1  # share of recent attempts that timed out at the adaptive deadline


class FirstTokenDeadline:
    """The first-token deadline of one deployment's calls, learnt from its answers (one process)."""

    __slots__ = ("_cap_s", "_policy", "_recent", "_samples", "_sorted", "_widen")

    def __init__(self, cap_s: float, policy: TtftPolicy) -> None:
        self._cap_s = cap_s
        self._policy = policy
        self._samples: deque[float] = deque(maxlen=policy.window)
        self._sorted: list[float] | None = None
        self._recent: deque[bool] = deque(maxlen=50)  # attempts under an adaptive deadline: timed out?
        self._widen = 1.0

    def deadline_s(self, attempt: int = 1) -> float:
        """The deadline for the `attempt`-th attempt of a call (1-based)."""
        p = self._policy
        if not p.adaptive or len(self._samples) < p.min_samples:
            return self._cap_s
        if self._sorted is None:
            self._sorted = sorted(self._samples)
        ordered = self._sorted
        high = ordered[min(len(ordered) - 1, math.ceil(p.percentile * len(ordered)) - 1)]
        base = max(p.floor_s, p.factor * high) * self._widen * 2.0 ** (attempt - 1)
        return min(self._cap_s, base)

    def observe(self, ttft_s: float, deadline_s: float) -> None:
        """A first token arrived after `ttft_s` under a deadline of `deadline_s`."""
        self._samples.append(ttft_s)
        self._sorted = None
        if deadline_s < self._cap_s:
            self._recent.append(False)
            self._adjust()

    def timed_out(self, deadline_s: float) -> None:
        """No first token within `deadline_s`."""
        if deadline_s < self._cap_s:
            self._recent.append(True)
            self._adjust()

    def _adjust(self) -> None:
        recent = self._recent
        if len(recent) < 20:
            return
        share = sum(recent) / len(recent)
        if share > self._policy.widen_above:
            self._widen = min(self._widen * 2.0, 64.0)
            recent.clear()  # judge the wider deadline on its own attempts
        elif share < self._policy.widen_above / 4 and self._widen > 1.0:
            self._widen = max(1.0, self._widen / 2.0)
            recent.clear()
