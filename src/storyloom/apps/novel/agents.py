"""The chapter agents: one model call each (plus at most one retry), tolerant of bad output.

An agent gets an `AgentCall` (the client, its model, the call's metadata, where deltas go, and an
`AgentRun` that accumulates tokens and time) and returns plain data. What each agent does when the
model misbehaves is decided here, in one place:

- structured agents parse defensively; unparseable → one retry with a stricter instruction →
  a default built from what we have, with `run.degraded` saying why;
- optional structured agents (director, plot, quality, judge) also degrade on provider errors;
  Character and Scene raise instead, so the flow's SKIP policy lets synthesis go on without them;
- except errors no default can stand in for, because every later call would meet them too: a
  provider that refuses our key (ProviderAuthError) or a spent budget (BudgetExceededError) always
  propagate, so the chapter fails at once and permanently instead of being written from defaults;
- prose agents keep a cut stream's partial text; an empty answer is retried once; Optimize and
  Revise fall back to the text they were given, Synthesis fails its version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from storyloom.agents import NOT_DEGRADABLE, AgentCall, ModelChoice, ask_json, ask_text
from storyloom.apps.novel import prompts
from storyloom.apps.novel.models import ChapterRequest
from storyloom.apps.novel.schemas import (
    CharacterNotes,
    CreationPlan,
    JudgeVerdict,
    PlotOutline,
    QualityReport,
    SceneNotes,
)
from storyloom.config import Settings
from storyloom.errors import OutputParseError, ProviderError

__all__ = [
    "AGENTS",
    "AgentModels",
    "character",
    "director",
    "judge",
    "optimize",
    "plot",
    "quality",
    "revise",
    "scene",
    "synthesis",
    "temperature",
]

AGENTS = ("director", "plot", "character", "scene", "synthesis", "optimize", "quality", "revise", "judge")

_TEMPERATURE = {"quality": 0.2, "judge": 0.1, "synthesis": 0.9, "optimize": 0.7, "revise": 0.7}


class AgentModels(ModelChoice):
    """The model each agent calls: its override, else the default (STORYLOOM_AGENT_MODELS)."""

    def for_agent(self, agent: str) -> str:
        return self.for_step(agent, "novel")

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentModels:
        return cls(default=settings.provider().model, overrides=dict(settings.agent_models))


def temperature(agent: str) -> float:
    """Judging and scoring want consistency; writing wants variety."""
    return _TEMPERATURE.get(agent, 0.8)


def _max_tokens(target_length: int, language: str) -> int:
    """Room for the target plus generous slack: zh ~1 token a character, en ~1.4 tokens a word."""
    per_unit = 1.0 if language == "zh" else 1.4
    return int(target_length * per_unit * 2) + 256


def _sentences(text: str, n: int) -> str:
    parts = [p for p in re.split(r"(?<=[。！？.!?])\s*", text.strip()) if p]
    return "".join(parts[:n]) if parts else text[:200]


# -- the agents ---------------------------------------------------------------------------------


async def director(call: AgentCall, req: ChapterRequest) -> dict[str, Any]:
    inp = req.input
    messages = prompts.json_messages("director", inp, {}, CreationPlan, previous_summary=req.previous_summary)

    def default() -> CreationPlan:
        events = [s for s in re.split(r"[。！？；.!?;\n]", inp.chapter_outline) if s.strip()]
        return CreationPlan(
            theme=inp.chapter_outline,
            tone=inp.style,
            key_events=events or [inp.chapter_outline],
            pacing="",
            ending_hook="",
        )

    return (await ask_json(call, messages, CreationPlan, default=default)).model_dump()


async def plot(call: AgentCall, req: ChapterRequest, plan: Mapping[str, Any], hint: str) -> dict[str, Any]:
    sections = {"plan": plan, "hint": hint}
    messages = prompts.json_messages(
        "plot", req.input, sections, PlotOutline, previous_summary=req.previous_summary
    )

    def default() -> PlotOutline:
        events = [str(e) for e in plan.get("key_events", [])] or [req.input.chapter_outline]
        return PlotOutline(beats=events, conflict=str(plan.get("theme", "")), climax=events[-1])

    return (await ask_json(call, messages, PlotOutline, default=default)).model_dump()


async def character(
    call: AgentCall, req: ChapterRequest, plan: Mapping[str, Any], plot_: Any
) -> dict[str, Any]:
    """Optional for the chapter, but its failure is the flow's to handle (SKIP): it raises."""
    sections = {"plan": plan, "plot": plot_}
    messages = prompts.json_messages(
        "character", req.input, sections, CharacterNotes, previous_summary=req.previous_summary
    )
    names = [c.name for c in req.input.characters]
    value = await ask_json(
        call,
        messages,
        CharacterNotes,
        default=lambda: CharacterNotes(performances=names, dialogue_tips=[]),
        optional=False,
    )
    return value.model_dump()


async def scene(call: AgentCall, req: ChapterRequest, plan: Mapping[str, Any], plot_: Any) -> dict[str, Any]:
    """Like `character`: raises on provider errors so the flow can skip it."""
    sections = {"plan": plan, "plot": plot_}
    messages = prompts.json_messages(
        "scene", req.input, sections, SceneNotes, previous_summary=req.previous_summary
    )
    value = await ask_json(
        call,
        messages,
        SceneNotes,
        default=lambda: SceneNotes(setting="", atmosphere=str(plan.get("tone", "")), sensory_details=[]),
        optional=False,
    )
    return value.model_dump()


async def synthesis(
    call: AgentCall,
    req: ChapterRequest,
    *,
    plan: Mapping[str, Any],
    plot_: Any,
    characters: Any,
    scene_: Any,
    hint: str,
) -> str:
    """The draft. Its failure fails the version: there is nothing to fall back to."""
    inp = req.input
    sections = {"plan": plan, "plot": plot_, "character": characters, "scene": scene_, "hint": hint}
    messages = prompts.text_messages(
        "synthesis", inp, sections, target_length=inp.length_goal, previous_summary=req.previous_summary
    )
    return await ask_text(call, messages, max_tokens=_max_tokens(inp.length_goal, inp.language))


async def optimize(
    call: AgentCall, req: ChapterRequest, draft: str, hint: str, plan: Mapping[str, Any] | None = None
) -> str:
    """The polished draft; an empty or cut answer keeps the draft (a provider error raises: FALLBACK)."""
    inp = req.input
    messages = prompts.text_messages(
        "optimize",
        inp,
        {"plan": plan, "hint": hint, "draft": draft},
        target_length=inp.length_goal,
        previous_summary=req.previous_summary,
    )
    try:
        text = await ask_text(call, messages, max_tokens=_max_tokens(inp.length_goal, inp.language))
    except OutputParseError as exc:
        call.run.degraded = f"{exc}; kept the draft"
        return draft
    if call.run.degraded:  # a cut polish is worse than the whole draft
        call.run.degraded = "stream cut; kept the draft"
        return draft
    return text


async def quality(
    call: AgentCall, req: ChapterRequest, text: str, plan: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Score, issues and summary; unknown quality defaults to the threshold (no blind revising)."""
    messages = prompts.json_messages(
        "quality",
        req.input,
        {"plan": plan, "text": text},
        QualityReport,
        previous_summary=req.previous_summary,
    )
    value = await ask_json(
        call,
        messages,
        QualityReport,
        default=lambda: QualityReport(score=req.quality_threshold, issues=[], summary=_sentences(text, 2)),
    )
    return value.model_dump()


async def revise(
    call: AgentCall,
    req: ChapterRequest,
    text: str,
    issues: list[str],
    hint: str,
    plan: Mapping[str, Any] | None = None,
) -> str:
    """The revised text; any failure keeps the text it was given."""
    inp = req.input
    sections = {"plan": plan, "hint": hint, "issues": "\n".join(f"- {i}" for i in issues), "text": text}
    messages = prompts.text_messages(
        "revise", inp, sections, target_length=inp.length_goal, previous_summary=req.previous_summary
    )
    try:
        revised = await ask_text(call, messages, max_tokens=_max_tokens(inp.length_goal, inp.language))
    except NOT_DEGRADABLE:
        raise  # a refused key or a spent budget is not something a kept text can hide
    except (OutputParseError, ProviderError) as exc:
        if isinstance(exc, NOT_DEGRADABLE):
            raise
        call.run.degraded = f"{type(exc).__name__}: {exc}; kept the previous text"
        return text
    if call.run.degraded:
        call.run.degraded = "stream cut; kept the previous text"
        return text
    return revised


async def judge(
    call: AgentCall, req: ChapterRequest, plan: Mapping[str, Any], text_a: str, text_b: str
) -> JudgeVerdict | None:
    """Which of A and B is better; None when the judge could not answer (an abstention)."""
    sections = {"plan": plan, "a": text_a, "b": text_b}
    messages = prompts.json_messages(
        "judge", req.input, sections, JudgeVerdict, previous_summary=req.previous_summary
    )
    abstain = JudgeVerdict(winner="A", reasons=[])
    value = await ask_json(call, messages, JudgeVerdict, default=lambda: abstain)
    return None if value is abstain else value
