"""Request and response bodies of the HTTP API (pydantic, so /docs shows them and bad input is a 422)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storyloom.novel.models import Character, Language, NovelInput
from storyloom.validation import NOT_BLANK_SCHEMA, not_a_bool, not_blank

__all__ = [
    "ChapterCreate",
    "ChapterOut",
    "ChapterSubmitted",
    "ErrorOut",
    "FieldError",
    "GenerateRequest",
    "GenerateResponse",
    "HealthOut",
    "JobEventOut",
    "JobOut",
    "MetricsOut",
    "ProjectCreate",
    "ProjectOut",
    "ProjectPatch",
    "TaskFrameOut",
    "TaskResult",
    "TaskStatus",
    "ValidationErrorOut",
    "VersionOut",
]

Priority = Field(default=5, ge=0, le=9, description="0..9, higher runs first")
_IDEMPOTENCY = (
    "A repeated submission with the same key and body returns the same job; the same key with another"
    " body is refused (422). The Idempotency-Key header wins."
)
IdempotencyKey = Field(default=None, min_length=1, max_length=200, description=_IDEMPOTENCY)
# A project's keys are stored as `project:<id>:<key>` in a 200-character column.
ProjectIdempotencyKey = Field(default=None, min_length=1, max_length=150, description=_IDEMPOTENCY)
# The chapters table's `index` is a 32-bit integer on PostgreSQL; no book comes near this.
MAX_CHAPTER_INDEX = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors: every refusal has one of these two bodies (`api/errors.py` makes them) ---------------


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer but 422: `message` is one sentence; `detail` the same (FastAPI's name)."""

    detail: str
    message: str
    limit: str | None = Field(
        default=None, description="429 only: the limit that refused the request (`queue` or a tenant limit)"
    )


class FieldError(BaseModel):
    field: str = Field(description="where, dotted and without the location: `novel_input.chapter_outline`")
    loc: list[str] = Field(description="where, as FastAPI says it: `[\"body\", \"novel_input\", ...]`")
    message: str
    type: str = Field(description="pydantic's error type, e.g. `missing`, `string_too_long`")


class ValidationErrorOut(BaseModel):
    """422: the request does not match the schema (or reuses an idempotency key for another body)."""

    detail: list[FieldError]
    message: str


# -- the seed's contract (/api/novel/...) ---------------------------------------------------------


class GenerateRequest(_Strict):
    novel_input: NovelInput
    priority: int = Priority
    versions: int | None = Field(default=None, ge=1, le=10, description="candidate versions (default 2)")
    max_parallel: int | None = Field(default=None, ge=1, le=10)
    idempotency_key: str | None = IdempotencyKey

    _integers = field_validator("priority", "versions", "max_parallel", mode="before")(not_a_bool)


class GenerateResponse(BaseModel):
    task_id: str
    status: str
    message: str


class TaskStatus(BaseModel):
    task_id: str
    status: str
    priority: int
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None


class TaskResult(BaseModel):
    task_id: str
    status: str
    chapter_content: str | None = None
    execution_time: float | None = None
    error: str | None = None


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


class JobOut(BaseModel):
    id: str
    kind: str
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
    result: dict[str, Any] | None
    events_url: str


class JobEventOut(BaseModel):
    """One entry of a job's event log: the JSON `data:` of an SSE frame (`id:` = seq, `event:` = kind)."""

    seq: int = Field(description="the job's event offset, from 1; resume after it with Last-Event-ID")
    kind: str = Field(description="`job.submitted`, `step.delta`, ...; last job.completed|failed|cancelled")
    step: str | None
    ts: float
    data: dict[str, Any]


class TaskFrameOut(BaseModel):
    """The first frame of POST /api/novel/generate/stream (`event: task`, no `id:`): the job it follows."""

    kind: Literal["task"]
    task_id: str
    status: str


# -- projects, chapters, versions -----------------------------------------------------------------


class ProjectCreate(_Strict):
    title: str = Field(min_length=1, max_length=300)
    premise: str = Field(default="", max_length=20000)
    outline: str = Field(default="", max_length=20000)
    characters: list[Character] = Field(default_factory=list, max_length=30)
    style: str = Field(default="", max_length=1000)
    genre: str = Field(default="", max_length=100)
    language: Language = "zh"


class ProjectPatch(_Strict):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    premise: str | None = Field(default=None, max_length=20000)
    outline: str | None = Field(default=None, max_length=20000)
    characters: list[Character] | None = Field(default=None, max_length=30)
    style: str | None = Field(default=None, max_length=1000)
    genre: str | None = Field(default=None, max_length=100)
    language: Language | None = None


class ProjectOut(BaseModel):
    id: str
    title: str
    premise: str
    outline: str
    characters: list[dict[str, Any]]
    style: str
    genre: str
    language: str
    created_at: float
    updated_at: float


class ChapterCreate(_Strict):
    """Write (or rewrite) a chapter of the project: the project supplies outline, characters, style."""

    index: int | None = Field(
        default=None, ge=1, le=MAX_CHAPTER_INDEX, description="chapter number; default: the next one"
    )
    title: str = Field(default="", max_length=300)
    outline: str = Field(
        max_length=20000,
        description="what this chapter must do",
        json_schema_extra=NOT_BLANK_SCHEMA,
    )
    target_length: int | None = Field(default=None, ge=100, le=20000)
    versions: int = Field(default=2, ge=1, le=10)
    max_parallel: int = Field(default=3, ge=1, le=10)
    priority: int = Priority
    idempotency_key: str | None = ProjectIdempotencyKey

    _integers = field_validator(
        "index", "target_length", "versions", "max_parallel", "priority", mode="before"
    )(not_a_bool)

    @field_validator("outline")
    @classmethod
    def _outline(cls, v: str) -> str:
        return not_blank(v, "the chapter outline")


class VersionOut(BaseModel):
    id: str
    index: int
    job_id: str | None
    text: str
    scores: dict[str, Any]
    chosen: bool
    created_at: float


class ChapterOut(BaseModel):
    id: str
    project_id: str
    index: int
    title: str
    outline: str
    summary: str | None
    current_version_id: str | None
    versions: list[VersionOut] = Field(default_factory=list)
    jobs: list[JobOut] = Field(default_factory=list, description="the chapter's jobs, newest first")
    created_at: float
    updated_at: float


class ChapterSubmitted(BaseModel):
    chapter: ChapterOut
    job: JobOut
