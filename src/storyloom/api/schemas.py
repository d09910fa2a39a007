"""Request and response bodies of the HTTP API (pydantic, so /docs shows them and bad input is a 422)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HealthOut", "IdempotencyKey", "JobOut", "MetricsOut", "Priority", "Strict"]

Priority = Field(default=5, ge=0, le=9, description="0..9, higher runs first")
IdempotencyKey = Field(
    default=None,
    min_length=1,
    max_length=200,
    description="A repeated submission with the same key returns the same job (the header wins).",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthOut(BaseModel):
    status: Literal["healthy", "degraded"]
    workers: int
    queue_size: int
    database: Literal["ok", "unreachable"]
    reasons: list[str] = Field(default_factory=list)


class MetricsOut(BaseModel):
    total_executions: int
    success_rate: float
    avg_execution_time: float
    active_workers: int
    queue_size: int


# -- jobs -----------------------------------------------------------------------------------------


class UsageOut(BaseModel):
    """Every model call of the job so far (all attempts), from its usage rows."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit_share: float = 0.0


class DegradedOut(BaseModel):
    step: str
    reason: str


class JobOut(BaseModel):
    id: str
    kind: str
    app: str | None = Field(default=None, description="the app whose job this is (None: the engine's)")
    status: str
    priority: int
    tenant: str
    attempts: int
    max_attempts: int
    idempotency_key: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    result: Any = Field(default=None, description="the app's result once completed")
    text: str | None = Field(default=None, description="the result as a plain-text answer")
    usage: UsageOut = Field(default_factory=UsageOut)
    cost_usd: float = 0.0
    degraded: list[DegradedOut] = Field(default_factory=list, description="steps whose output is a default")
    events_url: str
