"""Sliding-window RPM/TPM and a concurrency cap for one simulator instance (one account/key).

A request is charged at admission (prompt + max_tokens, else the answer's length, as real providers
reserve) and stays in the window for `window_s` after its admission; there is no fixed minute
boundary, so a client that bursts at :59 and :00 is caught. In "count" mode nothing is refused, but
the largest requests/tokens ever inside one window and the admissions that broke a limit are
recorded, which lets a benchmark prove a client never overshoots.

Everything runs on the server's event loop thread, so no locks are needed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from storyloom.sim.config import Quota

__all__ = ["Admission", "QuotaWindow", "Ticket", "format_duration"]


@dataclass(slots=True)
class Ticket:
    """One admitted request inside the window; `tokens` may be settled later."""

    ts: float
    tokens: int
    live: bool = True  # False once it left the window


@dataclass(slots=True)
class Admission:
    """The decision for one request: `cause` is None when it is within every limit."""

    admitted: bool
    cause: str | None = None
    retry_after_s: float = 0.0
    message: str = ""
    ticket: Ticket | None = None
    headers: dict[str, str] = field(default_factory=dict)


def format_duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format (Go durations): "850ms", "12s", "1m30.5s"."""
    seconds = max(0.0, seconds)
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    secs = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs}s" if minutes else f"{secs}s"


class QuotaWindow:
    """The live window of admitted requests and the maxima seen since the last reset."""

    def __init__(self) -> None:
        self._tickets: deque[Ticket] = deque()
        self._tokens = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_window_requests = 0
        self.max_window_tokens = 0
        self.over_quota_admitted = 0

    def reset_maxima(self) -> None:
        self.max_in_flight = self.in_flight
        self.max_window_requests = len(self._tickets)
        self.max_window_tokens = self._tokens
        self.over_quota_admitted = 0

    def current(self, now: float, window_s: float) -> tuple[int, int]:
        """(requests, tokens) charged inside the window ending now."""
        self._prune(now, window_s)
        return len(self._tickets), self._tokens

    def _prune(self, now: float, window_s: float) -> None:
        edge = now - window_s
        tickets = self._tickets
        while tickets and tickets[0].ts <= edge:
            t = tickets.popleft()
            t.live = False
            self._tokens -= t.tokens

    def admit(self, quota: Quota, window_s: float, now: float, charge: int) -> Admission:
        """Check every limit, then admit (always in count mode) and charge `charge` tokens."""
        self._prune(now, window_s)
        cause, retry, message = self._check(quota, window_s, now, charge)
        admitting = cause is None or quota.mode == "count"
        headers = self._headers(quota, window_s, now, charge if admitting else 0, admitting)
        if cause is not None and quota.mode == "enforce":
            return Admission(False, cause, retry, message, None, headers)
        if cause is not None:
            self.over_quota_admitted += 1
        ticket = Ticket(now, charge)
        self._tickets.append(ticket)
        self._tokens += charge
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_window_requests = max(self.max_window_requests, len(self._tickets))
        self.max_window_tokens = max(self.max_window_tokens, self._tokens)
        return Admission(True, cause, 0.0, message, ticket, headers)

    def release(self, ticket: Ticket, *, settle_tokens: int | None = None) -> None:
        """The request finished (or the client left); optionally settle its charge to real usage."""
        self.in_flight -= 1
        if settle_tokens is not None and ticket.live:
            self._tokens += settle_tokens - ticket.tokens
            ticket.tokens = settle_tokens

    def _check(self, quota: Quota, window_s: float, now: float, charge: int) -> tuple[str | None, float, str]:
        if quota.concurrency is not None and self.in_flight >= quota.concurrency:
            return "concurrency", 1.0, f"Too many concurrent requests (limit {quota.concurrency})."
        if quota.rpm is not None and len(self._tickets) >= quota.rpm:
            wait = self._tickets[len(self._tickets) - quota.rpm].ts + window_s - now
            return "rpm", wait, f"Rate limit reached for requests per {window_s:g} s: limit {quota.rpm}."
        if quota.tpm is not None and self._tokens + charge > quota.tpm:
            if charge > quota.tpm:
                return "tpm", window_s, f"Request too large: {charge} tokens > limit {quota.tpm} per window."
            need = self._tokens + charge - quota.tpm
            freed, wait = 0, window_s
            for t in self._tickets:
                freed += t.tokens
                if freed >= need:
                    wait = t.ts + window_s - now
                    break
            return (
                "tpm",
                wait,
                f"Rate limit reached for tokens per {window_s:g} s: limit {quota.tpm}, "
                + (f"used {self._tokens}, requested {charge}."),
            )
        return None, 0.0, ""

    def _headers(
        self, quota: Quota, window_s: float, now: float, charge: int, admitting: bool
    ) -> dict[str, str]:
        h: dict[str, str] = {}
        last_expiry = self._tickets[-1].ts + window_s - now if self._tickets else 0.0
        if quota.rpm is not None:
            used = len(self._tickets) + (1 if admitting else 0)
            h["x-ratelimit-limit-requests"] = str(quota.rpm)
            h["x-ratelimit-remaining-requests"] = str(max(0, quota.rpm - used))
            h["x-ratelimit-reset-requests"] = format_duration(window_s if admitting else last_expiry)
        if quota.tpm is not None:
            h["x-ratelimit-limit-tokens"] = str(quota.tpm)
            h["x-ratelimit-remaining-tokens"] = str(max(0, quota.tpm - self._tokens - charge))
            h["x-ratelimit-reset-tokens"] = format_duration(window_s if admitting else last_expiry)
        return h
