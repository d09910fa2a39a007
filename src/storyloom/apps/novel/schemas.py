"""The structured answers the planning, checking and judging agents give, and their fallbacks.

Kept flat (strings, lists of strings, bounded integers) so each schema fits in a prompt without
$defs, and lenient where models are sloppy: a string where a list was asked becomes a one-item
list, an out-of-range score is clamped rather than rejected, and only the fields an agent cannot
do without are required, so a cut stream's repaired JSON still counts. (The prompt asks for every
field: `prompt_schema` marks them all required.)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

__all__ = ["CharacterNotes", "CreationPlan", "JudgeVerdict", "PlotOutline", "QualityReport", "SceneNotes"]


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [v if isinstance(v, str) else str(v) for v in value]
    return value


class _Lenient(BaseModel):
    @field_validator("*", mode="before")
    @classmethod
    def _lists(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is not None and field.annotation == list[str]:
            return _as_list(value)
        if field is not None and field.annotation is str and isinstance(value, list):
            return "；".join(str(v) for v in value)
        return value


class CreationPlan(_Lenient):
    """Director: what the chapter is about and how it moves."""

    theme: str = Field(description="the chapter's central idea")
    tone: str = Field(default="", description="the emotional tone")
    key_events: list[str] = Field(description="the events the chapter must contain, in order")
    pacing: str = Field(default="", description="how fast each part moves")
    ending_hook: str = Field(default="", description="how the chapter ends to pull the reader on")


class PlotOutline(_Lenient):
    """Plot: the beats of the chapter."""

    beats: list[str] = Field(description="the plot beats, in order")
    conflict: str = Field(default="", description="the central conflict of the chapter")
    climax: str = Field(default="", description="the turning point or climax")


class CharacterNotes(_Lenient):
    """Character: how each character acts and speaks in this chapter."""

    performances: list[str] = Field(description="one line per character: actions, emotions, arc")
    dialogue_tips: list[str] = Field(
        default_factory=list, description="how the characters speak, with sample lines"
    )


class SceneNotes(_Lenient):
    """Scene: where it happens and how it feels."""

    setting: str = Field(description="where and when the chapter takes place")
    atmosphere: str = Field(default="", description="the mood of the place")
    sensory_details: list[str] = Field(default_factory=list, description="sights, sounds, smells to use")


class QualityReport(_Lenient):
    """QualityCheck: a score, the problems, and a short summary for the next chapter."""

    score: int = Field(ge=0, le=100, description="overall quality from 0 to 100")
    issues: list[str] = Field(default_factory=list, description="concrete problems to fix; empty when none")
    summary: str = Field(default="", description="a two- or three-sentence summary of the chapter")

    @field_validator("score", mode="before")
    @classmethod
    def _clamp(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = float(value.strip().removesuffix("分").removesuffix("/100"))
            except ValueError:
                return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return max(0, min(100, round(value)))
        return value


class JudgeVerdict(_Lenient):
    """Judge: which of two versions, A or B, is better, and why."""

    winner: Literal["A", "B"] = Field(description="the better version: A or B")
    reasons: list[str] = Field(default_factory=list, description="why the winner is better")

    @field_validator("winner", mode="before")
    @classmethod
    def _letter(cls, value: Any) -> Any:
        if isinstance(value, str):
            v = value.strip().strip("\"'“”《》「」()（）").upper()
            for letter in ("A", "B"):
                if v in (letter, f"VERSION {letter}", f"版本{letter}", f"版本 {letter}"):
                    return letter
        return value
