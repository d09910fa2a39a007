"""How one agent step went: its calls, tokens, cost and time, and what had to be degraded."""

from __future__ import annotations

from pydantic import BaseModel, Field

from storyloom.llm.types import Usage

__all__ = ["AgentRun"]


class AgentRun(BaseModel):
    """The record of one agent (one step's model work), kept in step results so a resumed run still
    knows what its restored steps cost and whether their output was the model's or a default."""

    agent: str
    model: str = ""
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    calls: int = 0
    model_s: float = 0.0  # time spent waiting for model calls (the bench's critical path uses it)
    elapsed_s: float = 0.0  # the step's wall time
    degraded: str | None = None  # why the output is a default or fallback; None when it is the model's
    error: str | None = None  # the step failed and the flow's policy replaced or skipped it
    notes: list[str] = Field(default_factory=list)  # repairs and retries that still gave a real answer
