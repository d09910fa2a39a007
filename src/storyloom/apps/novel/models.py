"""What a chapter request looks like and what writing one returns.

Inputs use seed 000's names so existing clients keep working; results are plain pydantic models
that dump to JSON (the job service stores them, the CLI writes them to chapter.json).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from storyloom.agents import AgentRun
from storyloom.apps.novel.continuity import ContinuityFacts, ContinuityIssue
from storyloom.errors import InputError
from storyloom.llm.types import Usage
from storyloom.validation import NOT_BLANK_SCHEMA, from_validation, not_a_bool, not_blank

__all__ = [
    "DEFAULT_TARGET_LENGTH",
    "AgentRun",
    "ChapterInput",
    "ChapterRequest",
    "ChapterResult",
    "Character",
    "Degradation",
    "JudgeMatch",
    "JudgeReport",
    "Language",
    "NovelInput",
    "VersionResult",
    "detect_language",
    "input_error",
]

Language = Literal["zh", "en"]

# zh counts characters, en counts words: a typical web-novel chapter in each.
DEFAULT_TARGET_LENGTH: dict[str, int] = {"zh": 2000, "en": 1200}


_CJK = re.compile("[\u3400-\u9fff\uf900-\ufaff]")
_LETTERS = re.compile(r"[A-Za-z\u00c0-\u024f]")


def detect_language(text: str) -> Language:
    """zh when Chinese characters make up a fifth of the letters, else en: enough to tell the two
    apart from an outline (a Chinese outline naming "Mara" is still Chinese)."""
    cjk = len(_CJK.findall(text))
    latin_words = len(_LETTERS.findall(text)) / 5  # letters of a word count like one character
    return "zh" if cjk and cjk >= 0.2 * (cjk + latin_words) else "en"


class Character(BaseModel):
    """One character the chapter may use."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=100, json_schema_extra=NOT_BLANK_SCHEMA)
    role: str = Field(default="", max_length=200)
    traits: list[str] = Field(default_factory=list, max_length=20)
    background: str = Field(default="", max_length=2000)
    goals: str = Field(default="", max_length=1000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return not_blank(v, "a character's name")


class NovelInput(BaseModel):
    """Seed 000's NovelInput: the story so far and what this chapter must do."""

    model_config = ConfigDict(extra="ignore")

    overall_outline: str = Field(default="", max_length=20000)
    chapter_outline: str = Field(max_length=20000, json_schema_extra=NOT_BLANK_SCHEMA)
    genre: str = Field(default="", max_length=100)
    characters: list[Character] = Field(default_factory=list, max_length=30)
    style: str = Field(default="", max_length=1000)
    target_length: int | None = Field(
        default=None, ge=100, le=20000, description="zh: characters, en: words; default 2000 / 1200"
    )
    language: Language = Field(default="zh", description="zh or en; when absent, detected from the outlines")
    # The book's context pack (context.build_context), rendered once per chapter: every agent and
    # version of the chapter sends it in the same place (a cached prompt prefix).
    book_context: str = Field(default="", max_length=200_000)

    _integers = field_validator("target_length", mode="before")(not_a_bool)

    @field_validator("chapter_outline")
    @classmethod
    def _outline(cls, v: str) -> str:
        return not_blank(v, "the chapter outline")

    @model_validator(mode="before")
    @classmethod
    def _detect_language(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("language") is None:
            text = f"{data.get('chapter_outline') or ''}\n{data.get('overall_outline') or ''}"
            data = {**data, "language": detect_language(text)}
        return data

    @property
    def length_goal(self) -> int:
        """The target length in the language's unit (characters for zh, words for en)."""
        return self.target_length or DEFAULT_TARGET_LENGTH[self.language]


class ChapterRequest(BaseModel):
    """One chapter to write: the input, how many candidate versions, how many at once."""

    model_config = ConfigDict(extra="ignore")

    input: NovelInput
    # Seed 002's WRITER_CHAPTER_VERSION_COUNT and WRITER_MAX_PARALLEL_REQUESTS.
    versions: int = Field(default=2, ge=1, le=10)
    max_parallel: int = Field(default=3, ge=1, le=10)
    previous_summary: str | None = Field(default=None, max_length=5000)
    # Revise while the quality score is below the threshold, at most max_revise_rounds rounds.
    quality_threshold: int = Field(default=70, ge=0, le=100)
    max_revise_rounds: int = Field(default=2, ge=0, le=5)
    # What memory says (dead characters, where everyone is): continuity rules and agent run when set.
    continuity: ContinuityFacts | None = None
    # A version outside target ±10% is continued or trimmed (length.fit_length) before scoring.
    fit_length: bool = True


class ChapterInput(NovelInput):
    """The novel app's job input: a `NovelInput` and the chapter's options in one flat object, so
    `{"input": {"chapter_outline": "...", "versions": 3}}` is a whole job (`ChapterRequest` is the
    same thing nested, as the flow reads it)."""

    versions: int = Field(default=2, ge=1, le=10)
    max_parallel: int = Field(default=3, ge=1, le=10)
    previous_summary: str | None = Field(default=None, max_length=5000)
    quality_threshold: int = Field(default=70, ge=0, le=100)
    max_revise_rounds: int = Field(default=2, ge=0, le=5)
    continuity: ContinuityFacts | None = None
    fit_length: bool = True

    def request(self) -> ChapterRequest:
        options = {
            "versions",
            "max_parallel",
            "previous_summary",
            "quality_threshold",
            "max_revise_rounds",
            "continuity",
            "fit_length",
        }
        return ChapterRequest(
            input=NovelInput.model_validate(self.model_dump(exclude=options)),
            **self.model_dump(include=options),
        )

    @classmethod
    def of(cls, request: ChapterRequest) -> ChapterInput:
        return cls.model_validate({**request.input.model_dump(), **request.model_dump(exclude={"input"})})


class VersionResult(BaseModel):
    """One candidate version; a failed one keeps its error and whatever steps finished."""

    index: int  # 1-based, as shown to people
    style_hint: str
    ok: bool
    text: str = ""
    error: str | None = None
    quality_score: int | None = None
    quality_measured: bool = True  # False: the score is the threshold used as a default, not a judgement
    issues: list[str] = Field(default_factory=list)
    summary: str = ""
    revise_rounds: int = 0
    length: int = 0
    length_score: float = 0.0
    length_adherence: float = 0.0  # length / target: 1.0 on target, within 0.9..1.1 counts as met
    length_fit: str | None = None  # "continued" or "trimmed" when length control changed the text
    continuity: list[ContinuityIssue] = Field(default_factory=list)
    measures: dict[str, Any] = Field(default_factory=dict)  # quality.QualityMeasures as JSON
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    agents: list[AgentRun] = Field(default_factory=list)
    degraded: list[str] = Field(default_factory=list)  # agent names whose output was degraded


class JudgeMatch(BaseModel):
    """Two versions compared in both orders; a split vote is a tie settled by the tie-break rule."""

    a: int
    b: int
    winner: int
    votes: list[int]  # the winner of each order: (a, b) first, then (b, a)
    reasons: list[str] = Field(default_factory=list)
    tie_break: str | None = None


class JudgeReport(BaseModel):
    winner: int
    matches: list[JudgeMatch] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)  # why the winner won its matches
    calls: int = 0
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    degraded: str | None = None
    decided: bool = True  # False: no match had a clear winner; the choice is the tie-break's


class Degradation(BaseModel):
    """One agent whose output is not the model's own (a default, a kept draft, a cut stream)."""

    agent: str
    version: int | None = None  # None: the shared director or the judge
    reason: str


class ChapterResult(BaseModel):
    """Every version, the chosen one, why, and what it cost."""

    run_id: str
    language: Language
    target_length: int
    versions: list[VersionResult]
    chosen: int  # 1-based index into versions
    chosen_by: Literal["judge", "tie-break", "only", "user"]
    judge: JudgeReport | None = None
    plan: dict[str, object] = Field(default_factory=dict)
    director: AgentRun | None = None  # the shared plan's agent run (tokens, time, degradation)
    summary: str = ""  # of the chosen version: the next chapter's previous_summary
    previous_summary: str | None = None  # the seam this chapter was written after (read when it ran)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    cache_hit_share: float = 0.0  # prompt tokens served from the provider's prompt cache ÷ prompt tokens
    degraded: list[Degradation] = Field(default_factory=list)  # every degraded agent, in one place
    elapsed_s: float = 0.0
    step_times: dict[str, float] = Field(default_factory=dict)

    @property
    def chosen_version(self) -> VersionResult:
        return self.versions[self.chosen - 1]

    @property
    def text(self) -> str:
        return self.chosen_version.text


def input_error(exc: ValidationError, what: str = "input") -> InputError:
    """One sentence naming the first bad field, for the CLI and the API's messages."""
    return from_validation(exc, what)
