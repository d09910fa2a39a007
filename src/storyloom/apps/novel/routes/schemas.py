"""The novel's request and response bodies: the seed's contract and the projects API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from storyloom.api.schemas import IDEMPOTENCY_HELP, IdempotencyKey, JobOut, Priority, Strict, UsageOut
from storyloom.apps.novel.models import Character, Language, NovelInput
from storyloom.validation import NOT_BLANK_SCHEMA, not_a_bool, not_blank

__all__ = [
    "ChapterCreate",
    "ChapterOut",
    "ChapterSubmitted",
    "GenerateRequest",
    "GenerateResponse",
    "ProjectCreate",
    "ProjectOut",
    "ProjectPatch",
    "TaskResult",
    "TaskStatus",
    "VersionOut",
]

_Strict = Strict
# A project's keys are stored as `project:<id>:<key>` in a 200-character column.
ProjectIdempotencyKey = Field(default=None, min_length=1, max_length=150, description=IDEMPOTENCY_HELP)
# The chapters table's `index` is a 32-bit integer on PostgreSQL; no book comes near this.
MAX_CHAPTER_INDEX = 100_000


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
    usage: UsageOut = Field(default_factory=UsageOut, description="every model call of the job so far")
    cost_usd: float = 0.0


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
