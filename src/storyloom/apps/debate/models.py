"""The debate's input, the agents' structured outputs, and its result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CRITIC_PERSONAS",
    "DebateInput",
    "DebateResult",
    "HostVerdict",
    "PlanOut",
    "SearchReport",
    "Turn",
]

CRITIC_PERSONAS: tuple[tuple[str, str], ...] = (
    ("skeptic", "a skeptic who looks for weak evidence, hidden assumptions and risks"),
    ("pragmatist", "a pragmatist who asks what it costs, who does it and what can go wrong in practice"),
    ("expert", "a domain expert who checks facts, missing context and better alternatives"),
)
"""The critics of a round, in order: `critics=2` runs the first two, in parallel."""

SessionId = Field(
    default=None,
    min_length=1,
    max_length=64,
    pattern=r"^[A-Za-z0-9_.:-]+$",
    description="a conversation: messages with the same id share their history (per tenant)",
)


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=40_000)


class DebateInput(BaseModel):
    """One user message of a conversation; it becomes one job."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=8000, description="the user's message")
    session_id: str | None = SessionId
    history: list[Turn] = Field(
        default_factory=list,
        max_length=200,
        description="earlier turns given by the caller (the chat front); used instead of the stored ones",
    )
    max_rounds: int = Field(
        default=3, ge=1, le=3, description="critique rounds at most (the Host may stop earlier)"
    )
    critics: int = Field(default=2, ge=1, le=len(CRITIC_PERSONAS), description="critic personas per round")
    search: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: the Planner decides whether to search the web"
    )
    language: Literal["en", "zh"] = "en"


class PlanOut(BaseModel):
    approach: str = Field(description="how to answer, in two or three sentences")
    key_points: list[str] = Field(default_factory=list, max_length=6)
    needs_search: bool = Field(default=False, description="true when current facts from the web would help")
    search_queries: list[str] = Field(default_factory=list, max_length=3)


class HostVerdict(BaseModel):
    summary: str = Field(description="where the debate stands")
    open_questions: list[str] = Field(default_factory=list, max_length=5)
    another_round: bool = Field(
        default=False, description="true when the critics raised points worth another round"
    )


class SearchReport(BaseModel):
    """What the Planner's searches gave: honest about what came from cache or was degraded."""

    queries: list[str] = Field(default_factory=list)
    calls: int = 0
    cached: int = 0
    degraded: int = 0
    findings: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)


class DebateResult(BaseModel):
    text: str
    session_id: str | None = None
    rounds: int
    critiques: int
    host: HostVerdict
    search: SearchReport
    history_summarized: bool = False
