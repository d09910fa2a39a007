"""The learning system's inputs and structured outputs (seed 004's task kinds)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Analysis", "ChatIn", "ConversationTask", "ExportTask", "LearningInput", "Turn"]

SessionField = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=20_000)


class LearningInput(BaseModel):
    """One learner message: the tutor answers it (Feynman style) from the session's memories."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=8000)
    session_id: str = SessionField
    topic: str = Field(default="", max_length=200)
    history: list[Turn] = Field(default_factory=list, max_length=100, description="the short-term memory")
    background: bool = Field(
        default=True, description="enqueue memory consolidation and analysis after the answer"
    )


class ChatIn(LearningInput):
    wait_s: float = Field(default=30.0, gt=0, le=120, description="how long the answer may take")


class ConversationTask(BaseModel):
    """The payload of `learning.consolidate` and `learning.analyze`."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = SessionField
    topic: str = Field(default="", max_length=200)
    conversation: list[Turn] = Field(min_length=1, max_length=200)
    source_job: str | None = None


class ExportTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_ids: list[str] | None = Field(default=None, max_length=500, description="default: every session")


class Analysis(BaseModel):
    understanding: int = Field(ge=0, le=100, description="how well the learner understands the topic")
    gaps: list[str] = Field(default_factory=list, max_length=6)
    next_questions: list[str] = Field(default_factory=list, max_length=5)
