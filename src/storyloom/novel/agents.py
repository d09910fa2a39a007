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

import functools
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from storyloom.config import Settings
from storyloom.errors import (
    BudgetExceededError,
    OutputParseError,
    ProviderAuthError,
    ProviderError,
    StreamCutError,
)
from storyloom.llm.tokens import estimate_tokens
from storyloom.llm.types import CallMeta, ChatRequest, DeltaCallback, Message, ModelClient
from storyloom.novel import prompts
from storyloom.novel.models import AgentRun, ChapterRequest, TokenUsage
from storyloom.novel.parsing import parse_structured
from storyloom.novel.schemas import (
    CharacterNotes,
    CreationPlan,
    JudgeVerdict,
    PlotOutline,
    QualityReport,
    SceneNotes,
)

__all__ = [
    "AGENTS",
    "NOT_DEGRADABLE",
    "AgentCall",
    "AgentModels",
    "ask_json",
    "ask_text",
    "character",
    "director",
    "judge",
    "optimize",
    "plot",
    "quality",
    "revise",
    "scene",
    "synthesis",
]

AGENTS = ("director", "plot", "character", "scene", "synthesis", "optimize", "quality", "revise", "judge")

M = TypeVar("M", bound=BaseModel)

_JSON_MAX_TOKENS = 1500
# Never degraded into a default or a kept text: they recur on every call of the run.
NOT_DEGRADABLE: tuple[type[ProviderError], ...] = (ProviderAuthError, BudgetExceededError)
_TEMPERATURE = {"quality": 0.2, "judge": 0.1, "synthesis": 0.9, "optimize": 0.7, "revise": 0.7}


@dataclass(frozen=True, slots=True)
class AgentModels:
    """The model each agent calls: its override, else the default (Settings.model_for, as data)."""

    default: str
    overrides: Mapping[str, str] = field(default_factory=dict)

    def for_agent(self, agent: str) -> str:
        return self.overrides.get(agent) or self.default

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentModels:
        return cls(default=settings.provider().model, overrides=dict(settings.agent_models))


@dataclass(slots=True)
class AgentCall:
    """One agent step's handle on the model; every call is metered into `run`."""

    client: ModelClient
    model: str
    meta: CallMeta
    language: str
    on_delta: DeltaCallback | None = None
    run: AgentRun = field(default_factory=lambda: AgentRun(agent=""))

    async def chat(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The answer's text; a cut stream raises StreamCutError after its tokens are counted."""
        request = ChatRequest(
            model=self.model,
            messages=messages,
            temperature=_TEMPERATURE.get(self.run.agent, 0.8),
            max_tokens=max_tokens,
            json_schema=json_schema,
            meta=self.meta,
        )
        self.run.model = self.model
        self.run.calls += 1
        received: list[str] = []
        forward = self.on_delta

        def relay(text: str) -> None:
            received.append(text)
            if forward is not None:
                forward(text)

        start = time.perf_counter()
        try:
            result = await self.client.chat(request, relay)
        except StreamCutError as exc:
            self.run.usage = self.run.usage.add(
                TokenUsage(completion_tokens=estimate_tokens(exc.partial_text))
            )
            raise
        except ProviderError as exc:
            if not received:
                raise
            # The connection broke after text arrived: whatever the client called it, it is a cut
            # stream, and the text we relayed is its partial answer.
            partial = "".join(received)
            self.run.usage = self.run.usage.add(TokenUsage(completion_tokens=estimate_tokens(partial)))
            raise StreamCutError(
                f"stream broke after {len(partial)} characters: {exc}", partial_text=partial
            ) from exc
        finally:
            self.run.model_s = round(self.run.model_s + time.perf_counter() - start, 4)
        self.run.usage = self.run.usage.add(
            TokenUsage(
                prompt_tokens=result.usage.prompt_tokens, completion_tokens=result.usage.completion_tokens
            )
        )
        return result.text


def _note(run: AgentRun, note: str) -> None:
    run.notes.append(note)


async def ask_json(
    call: AgentCall,
    messages: list[Message],
    model: type[M],
    *,
    default: Callable[[], M],
    optional: bool = True,
) -> M:
    """Ask for `model`; retry once with a stricter instruction; then degrade to `default()`."""
    schema = _wire_schema(model)
    problem = ""
    for attempt, msgs in enumerate((messages, prompts.stricter(messages, call.language))):
        try:
            text = await call.chat(msgs, json_schema=schema, max_tokens=_JSON_MAX_TOKENS)
        except StreamCutError as exc:
            text = exc.partial_text  # the repairer can often close a cut JSON object
            _note(call.run, "stream cut")
        except ProviderError as exc:
            if not optional or isinstance(exc, NOT_DEGRADABLE):
                raise
            call.run.degraded = f"provider error, used a default: {exc}"
            return default()
        try:
            parsed = parse_structured(text, model)
        except OutputParseError as exc:
            problem = str(exc)
            _note(call.run, f"attempt {attempt + 1}: {problem}")
            continue
        if parsed.how != "clean":
            _note(call.run, f"JSON {parsed.how}")
        return parsed.value
    call.run.degraded = f"unparseable after a stricter retry ({problem}), used a default"
    return default()


@functools.cache
def _wire_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema sent as `json_schema` (cached: building it costs about a millisecond)."""
    return model.model_json_schema()


_FENCED_TEXT = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _clean_prose(text: str) -> str:
    text = text.strip()
    m = _FENCED_TEXT.match(text)
    return m.group(1).strip() if m else text


async def ask_text(call: AgentCall, messages: list[Message], *, max_tokens: int | None) -> str:
    """Prose, streamed. A cut stream keeps its partial text; an empty answer is retried once.

    Raises OutputParseError when both answers are empty, ProviderError when the gateway gave up.
    """
    for attempt in range(2):
        try:
            text = _clean_prose(await call.chat(messages, max_tokens=max_tokens))
        except StreamCutError as exc:
            text = _clean_prose(exc.partial_text)
            if text:
                call.run.degraded = f"stream cut, kept {len(text)} characters of partial text"
                return text
        if text:
            return text
        _note(call.run, f"attempt {attempt + 1}: empty answer")
    raise OutputParseError("the model returned an empty answer twice")


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
    messages = prompts.json_messages("character", req.input, {"plan": plan, "plot": plot_}, CharacterNotes)
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
    messages = prompts.json_messages("scene", req.input, {"plan": plan, "plot": plot_}, SceneNotes)
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


async def optimize(call: AgentCall, req: ChapterRequest, draft: str, hint: str) -> str:
    """The polished draft; an empty or cut answer keeps the draft (a provider error raises: FALLBACK)."""
    inp = req.input
    messages = prompts.text_messages(
        "optimize", inp, {"hint": hint, "draft": draft}, target_length=inp.length_goal
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


async def quality(call: AgentCall, req: ChapterRequest, text: str) -> dict[str, Any]:
    """Score, issues and summary; unknown quality defaults to the threshold (no blind revising)."""
    messages = prompts.json_messages("quality", req.input, {"text": text}, QualityReport)
    value = await ask_json(
        call,
        messages,
        QualityReport,
        default=lambda: QualityReport(score=req.quality_threshold, issues=[], summary=_sentences(text, 2)),
    )
    return value.model_dump()


async def revise(call: AgentCall, req: ChapterRequest, text: str, issues: list[str], hint: str) -> str:
    """The revised text; any failure keeps the text it was given."""
    inp = req.input
    sections = {"hint": hint, "issues": "\n".join(f"- {i}" for i in issues), "text": text}
    messages = prompts.text_messages("revise", inp, sections, target_length=inp.length_goal)
    try:
        revised = await ask_text(call, messages, max_tokens=_max_tokens(inp.length_goal, inp.language))
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
    messages = prompts.json_messages("judge", req.input, sections, JudgeVerdict)
    abstain = JudgeVerdict(winner="A", reasons=[])
    value = await ask_json(call, messages, JudgeVerdict, default=lambda: abstain)
    return None if value is abstain else value
