"""Nova's input, the supervisor's plan, the sub-agents' notes and the post it writes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AGENTS",
    "AgentNotes",
    "AgentTask",
    "Headline",
    "NovaInput",
    "NovaResult",
    "SearchUse",
    "SupervisorPlan",
]

AGENTS = ("profile", "insight", "facts", "hitpoint")
"""The sub-agents (seed 001): who the readers are, what they feel, what is true, what hooks them."""


AgentName = Literal["profile", "insight", "facts", "hitpoint"]


class NovaInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: str = Field(min_length=1, max_length=4000, description="what the post is about, and for whom")
    audience: str = Field(default="", max_length=500)
    agents: list[AgentName] | None = Field(
        default=None, description="the sub-agents to run; default: the supervisor decides"
    )
    language: Literal["zh", "en"] = "zh"


class AgentTask(BaseModel):
    run: bool = True
    query: str = ""


def _all_agents() -> list[AgentName]:
    return ["profile", "insight", "facts", "hitpoint"]


class SupervisorPlan(BaseModel):
    """Flat on purpose: the schema goes into the prompt, and flat schemas are what models follow."""

    angle: str = Field(description="the post's angle in one sentence")
    agents: list[AgentName] = Field(default_factory=_all_agents, description="the sub-agents needed")
    profile_query: str = Field(default="", max_length=200, description="what ProfileAgent should search for")
    insight_query: str = Field(default="", max_length=200, description="what InsightAgent should search for")
    facts_query: str = Field(default="", max_length=200, description="what FactsAgent should search for")
    hitpoint_query: str = Field(
        default="", max_length=200, description="what HitpointAgent should search for"
    )


class AgentNotes(BaseModel):
    summary: str = Field(description="what this agent found, in two sentences")
    points: list[str] = Field(default_factory=list, max_length=6)


class Headline(BaseModel):
    title: str = Field(max_length=60, description="a catchy Xiaohongshu title, at most 20 characters")
    tags: list[str] = Field(default_factory=list, max_length=8, description="hashtags without '#'")


class SearchUse(BaseModel):
    """An agent's searches: how many, answered from cache, degraded (and why)."""

    calls: int = 0
    cached: int = 0
    degraded: int = 0
    reasons: list[str] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)


class NovaResult(BaseModel):
    title: str
    body: str
    tags: list[str]
    text: str
    agents_run: list[str]
    search: SearchUse
    degraded: bool = Field(description="some part of the post stands on a stand-in (search or model)")
