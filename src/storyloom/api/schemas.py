"""Request and response bodies of the engine's HTTP API (pydantic, so /docs shows them and bad
input is a 422). Apps declare their own next to their routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "IDEMPOTENCY_HELP",
    "DegradedOut",
    "ErrorOut",
    "FieldError",
    "HealthOut",
    "IdempotencyKey",
    "JobEventOut",
    "JobOut",
    "MetricsOut",
    "Priority",
    "QueuedOut",
    "Strict",
    "TaskFrameOut",
    "UsageOut",
    "ValidationErrorOut",
]

Priority = Field(default=5, ge=0, le=9, description="0..9, higher runs first")
IDEMPOTENCY_HELP = (
    "A repeated submission with the same key and body returns the same job; the same key with another"
    " body is refused (422). The Idempotency-Key header wins."
)
IdempotencyKey = Field(default=None, min_length=1, max_length=200, description=IDEMPOTENCY_HELP)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors: every refusal has one of these two bodies (`api/errors.py` makes them) ---------------


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer but 422: `message` is one sentence; `detail` the same (FastAPI's name)."""

    detail: str
    message: str
    limit: str | None = Field(
        default=None, description="429 only: the limit that refused the request (`queue` or a tenant limit)"
    )
    queue_token: str | None = Field(
        default=None,
        description="429 of an event stream only: your place in the stream queue; come back with "
        "?queue_token= after Retry-After seconds",
    )
    queue_position: int | None = Field(default=None, description="with queue_token: 1 = next")
    estimated_wait_s: float | None = Field(default=None, description="with queue_token: about how long")


class FieldError(BaseModel):
    field: str = Field(description="where, dotted and without the location: `novel_input.chapter_outline`")
    loc: list[str] = Field(description='where, as FastAPI says it: `["body", "novel_input", ...]`')
    message: str
    type: str = Field(description="pydantic's error type, e.g. `missing`, `string_too_long`")


class ValidationErrorOut(BaseModel):
    """422: the request does not match the schema (or reuses an idempotency key for another body)."""

    detail: list[FieldError]
    message: str


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
    tool_calls: int = 0  # tool calls (rows with model `tool:<name>`), not counted in `calls`


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


class JobEventOut(BaseModel):
    """One entry of a job's event log: the JSON `data:` of an SSE frame (`id:` = seq, `event:` = kind)."""

    seq: int = Field(description="the job's event offset, from 1; resume after it with Last-Event-ID")
    kind: str = Field(description="`job.submitted`, `step.delta`, ...; last job.completed|failed|cancelled")
    step: str | None
    ts: float
    data: dict[str, Any]


class QueuedOut(BaseModel):
    """`event: queued` (no `id:`): this stream waits for a slot; the job's events follow on it."""

    kind: Literal["queued"]
    queue_token: str
    position: int = Field(description="1 = next")
    estimated_wait_s: float


class TaskFrameOut(BaseModel):
    """The first frame of POST /api/novel/generate/stream (`event: task`, no `id:`): the job it follows."""

    kind: Literal["task"]
    task_id: str
    status: str
