"""The single retry loop's policy: what to retry, how long to wait, and what a failure tells the
breaker and the limits. The HTTP client never retries; neither does anything else."""

from __future__ import annotations

import random

from storyloom.errors import (
    BadRequestError,
    BudgetExceededError,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
)
from storyloom.limits.state import OutcomeKind

__all__ = ["backoff_s", "is_retryable", "outcome_kind", "refunds_all"]

_RETRY_STATUSES = frozenset({408, 409, 429})


def is_retryable(exc: ProviderError) -> bool:
    """408, 409, 429, 5xx, connection errors, deadlines, cut streams: yes. 400/401/403/404/422: no."""
    if isinstance(exc, BadRequestError | BudgetExceededError):
        return False
    if exc.status is not None and exc.status < 500 and exc.status not in _RETRY_STATUSES:
        return False
    return exc.retryable


def outcome_kind(exc: ProviderError) -> OutcomeKind:
    """How an error counts: 429 pauses the deployment; our own request errors say nothing about it."""
    if isinstance(exc, RateLimitError):
        return "rate_limited"
    if isinstance(exc, BadRequestError):
        return "neutral"
    if exc.status is not None and 400 <= exc.status < 500 and exc.status != 408:
        return "neutral"
    if isinstance(exc, ProviderTimeout) and exc.phase == "queue":
        return "neutral"
    return "fail"


def backoff_s(attempt: int, retry_after_s: float | None, *, base_s: float, max_s: float) -> float:
    """Full jitter (AWS): uniform(0, min(max, base·2^(attempt-1))), never sooner than Retry-After."""
    jittered = random.uniform(0.0, min(max_s, base_s * (2 ** (attempt - 1))))
    return max(jittered, retry_after_s or 0.0)


def refunds_all(exc: ProviderError) -> bool:
    """The provider never admitted the call, so its tokens were not charged (429, refused connect)."""
    if isinstance(exc, RateLimitError):
        return True
    return isinstance(exc, ProviderTimeout) and exc.phase == "connect"
