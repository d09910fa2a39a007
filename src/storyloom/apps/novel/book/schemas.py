"""Bodies of `/api/books` (docs/CONTRACTS.md, "novel/book")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from storyloom.api.schemas import JobOut, Priority, Strict
from storyloom.apps.novel.book.runs import BookRun
from storyloom.apps.novel.memory import CharacterSheet, MemoryRecord, OpenThread
from storyloom.apps.novel.outline import MAX_CHAPTERS
from storyloom.validation import NOT_BLANK_SCHEMA, not_a_bool, not_blank

__all__ = [
    "AcceptIn",
    "BookCreate",
    "BookCreated",
    "BookMemoryOut",
    "BookOut",
    "BookVersionOut",
    "ChapterDetailOut",
    "ChapterStateOut",
    "ChapterTextIn",
    "ChooseIn",
    "OutlineChapterIn",
    "RegenerateIn",
    "RewriteIn",
    "RunCreate",
    "RunOut",
    "run_out",
]

MAX_NUMBER = 100_000
CostCap = Field(
    default=None, gt=0, le=1_000_000, description="stop before the run's cost would pass this (USD)"
)


class BookCreate(Strict):
    title: str = Field(min_length=1, max_length=300, json_schema_extra=NOT_BLANK_SCHEMA)
    premise: str = Field(min_length=1, max_length=20_000, json_schema_extra=NOT_BLANK_SCHEMA)
    chapters: int = Field(ge=1, le=MAX_CHAPTERS)
    language: Literal["en", "zh"] = "en"
    genre: str = Field(default="", max_length=100)
    target_length: int | None = Field(default=None, ge=100, le=20_000)
    generate: bool = True
    priority: int = Priority

    _ints = field_validator("chapters", "target_length", "priority", mode="before")(not_a_bool)

    @field_validator("title", "premise")
    @classmethod
    def _blank(cls, v: str) -> str:
        return not_blank(v, "the title and the premise")


class BookOut(BaseModel):
    id: str
    title: str
    premise: str
    language: str
    genre: str
    chapters: int
    written: int
    stale: int
    cost_usd: float
    created_at: float
    updated_at: float


class BookCreated(BookOut):
    job: JobOut | None


class BookMemoryOut(BaseModel):
    chapters: list[MemoryRecord]
    open_foreshadowing: list[OpenThread]
    characters: list[CharacterSheet]


class ChapterStateOut(BaseModel):
    number: int
    title: str
    state: Literal["outlined", "writing", "awaiting_choice", "chosen", "stale"]
    chosen_version: int | None
    length: int
    cost_usd: float
    stale_reason: str | None
    memory_stale: bool


class ChapterDetailOut(ChapterStateOut):
    outline: str
    summary: str | None
    text: str | None


class BookVersionOut(BaseModel):
    id: str
    number: int
    text: str
    length: int
    chosen: bool
    judge_pick: bool
    job_id: str | None
    scores: dict[str, object]
    created_at: float


class ChapterTextIn(Strict):
    text: str = Field(min_length=1, max_length=200_000, json_schema_extra=NOT_BLANK_SCHEMA)

    @field_validator("text")
    @classmethod
    def _blank(cls, v: str) -> str:
        return not_blank(v, "the chapter text")


class OutlineChapterIn(Strict):
    title: str | None = Field(default=None, max_length=300)
    summary: str | None = Field(default=None, max_length=20_000)
    beats: list[str] | None = Field(default=None, max_length=50)
    pov: str | None = Field(default=None, max_length=200)
    target_length: int | None = Field(default=None, ge=100, le=20_000)

    _ints = field_validator("target_length", mode="before")(not_a_bool)


class ChooseIn(Strict):
    version: int | None = Field(default=None, ge=1, le=10_000, description="the version's number")
    version_id: str | None = Field(default=None, min_length=1, max_length=64)

    _ints = field_validator("version", mode="before")(not_a_bool)


class RewriteIn(Strict):
    start: int = Field(ge=0, le=1_000_000, description="first character of the passage in the chosen text")
    end: int = Field(ge=1, le=1_000_000, description="one past its last character")
    instruction: str = Field(min_length=1, max_length=2000, json_schema_extra=NOT_BLANK_SCHEMA)
    candidates: int = Field(default=2, ge=1, le=5)

    _ints = field_validator("start", "end", "candidates", mode="before")(not_a_bool)

    @field_validator("instruction")
    @classmethod
    def _blank(cls, v: str) -> str:
        return not_blank(v, "the instruction")


class AcceptIn(Strict):
    candidate: int = Field(ge=1, le=5, description="the candidate's number (1-based)")

    _ints = field_validator("candidate", mode="before")(not_a_bool)


class RunCreate(Strict):
    first: int = Field(default=1, ge=1, le=MAX_NUMBER)
    last: int | None = Field(
        default=None, ge=1, le=MAX_NUMBER, description="default: the last outlined chapter"
    )
    versions: int = Field(default=2, ge=1, le=10)
    chooser: Literal["judge", "author"] = "judge"
    cost_cap_usd: float | None = CostCap
    priority: int = Priority

    _ints = field_validator("first", "last", "versions", "priority", mode="before")(not_a_bool)


class RegenerateIn(Strict):
    from_chapter: int = Field(ge=1, le=MAX_NUMBER)
    versions: int = Field(default=2, ge=1, le=10)
    chooser: Literal["judge", "author"] = "judge"
    cost_cap_usd: float | None = CostCap

    _ints = field_validator("from_chapter", "versions", mode="before")(not_a_bool)


class RunOut(BaseModel):
    id: str
    book_id: str
    status: Literal["running", "waiting", "paused", "completed", "stopped", "failed", "cancelled"]
    first: int
    last: int
    chapter: int
    done: int
    of: int
    versions: int
    chooser: Literal["judge", "author"]
    only_stale: bool
    cost_cap_usd: float | None
    cost_usd: float
    tokens: int
    eta_s: float | None
    job_id: str | None
    stop_reason: str | None
    error: str | None
    created_at: float
    updated_at: float


def run_out(run: BookRun) -> RunOut:
    return RunOut(
        id=run.id,
        book_id=run.book_id,
        status=run.status.value,  # type: ignore[arg-type]
        first=run.first,
        last=run.last,
        chapter=run.chapter,
        done=run.done,
        of=run.of,
        versions=run.versions,
        chooser=run.chooser.value,  # type: ignore[arg-type]
        only_stale=run.only_stale,
        cost_cap_usd=run.cost_cap_usd,
        cost_usd=round(run.cost_usd, 8),
        tokens=run.tokens,
        eta_s=run.eta_s() if not run.status.is_terminal else None,
        job_id=run.job_id,
        stop_reason=run.stop_reason,
        error=run.error,
        created_at=run.created_at,
        updated_at=run.updated_at,
    )
