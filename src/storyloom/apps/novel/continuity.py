"""Continuity: does a draft contradict the story memory? Rules where rules suffice, an agent for the rest.

Every issue quotes its evidence: the sentence of the draft that contradicts, and what memory says.
Rules catch the cheap certain cases (a dead character who speaks or acts, a character who is
somewhere else than the previous chapter left them with no travel in between). The agent reads the
draft against the memory for the rest; an issue whose quote is not in the draft is dropped (a
model inventing evidence is worse than no report). Issues join the quality issues of the revise
loop, so a continuity error gets revised like a weak scene does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from storyloom.apps.novel.bible import _Loose
from storyloom.apps.novel.bookprompts import schema_fence
from storyloom.apps.novel.memory import CharacterSheet

__all__ = [
    "ContinuityFacts",
    "ContinuityIssue",
    "DeadCharacter",
    "agent_issues",
    "check",
    "continuity_task",
    "rule_checks",
    "verified",
]

_SENTENCE = re.compile(r"[^。！？.!?\n]*[。！？.!?]?[”\"」』]?")
_SPEECH = re.compile(
    r"[“\"「『]|\b(said|says|asked|asks|replied|shouted|whispered|laughed|nodded|walked|smiled)\b|说|道|问|喊|笑|点头|走"
)
_MEMORY = re.compile(
    r"\b(remember\w*|memor\w+|recall\w*|ghost|grave|corpse|body|dream\w*|mourn\w*|funeral)\b|\bthe late\b"
    r"|回忆|想起|记得|遗言|坟|尸|梦|生前|曾经|悼",
    re.I,
)
_TRAVEL = re.compile(
    r"\b(arriv\w+|travel\w*|journey\w*|reach\w*|rode|walked to|sailed|returned|came to|went to|left for|fled)"
    r"\b|来到|抵达|赶到|回到|前往|到达|离开|启程|奔向",
    re.I,
)


class DeadCharacter(BaseModel):
    name: str
    chapter: int | None = None


class ContinuityFacts(BaseModel):
    """What the rules check a draft of chapter `number` against (from the character sheets)."""

    number: int = 1
    dead: list[DeadCharacter] = Field(default_factory=list)
    locations: dict[str, str] = Field(default_factory=dict)  # name → where the last chapter left them
    places: list[str] = Field(default_factory=list)  # every place name memory knows

    @classmethod
    def from_sheets(
        cls, sheets: Sequence[CharacterSheet], *, number: int, places: Sequence[str] = ()
    ) -> ContinuityFacts:
        known = [*places, *(s.location for s in sheets if s.location)]
        return cls(
            number=number,
            dead=[DeadCharacter(name=s.name, chapter=s.died_in) for s in sheets if not s.alive],
            locations={s.name: s.location for s in sheets if s.alive and s.location},
            places=list(dict.fromkeys(p for p in known if p)),
        )

    def render(self, language: str) -> str:
        zh = language == "zh"
        lines = []
        for d in self.dead:
            lines.append(
                f"- {d.name}：已于第{d.chapter}章死亡"
                if zh
                else f"- {d.name}: dead since chapter {d.chapter}"
            )
        for name, place in self.locations.items():
            lines.append(
                f"- {name}：上一章结束时在{place}"
                if zh
                else f"- {name}: at {place} when the last chapter ended"
            )
        return "\n".join(lines)


class ContinuityIssue(_Loose):
    kind: Literal["dead_character", "location", "timeline", "character", "world", "other"] = "other"
    message: str = Field(default="", description="what is inconsistent")
    evidence: str = Field(default="", description="the exact sentence of the draft, quoted")
    memory: str = Field(default="", description="what the story memory says instead")
    source: Literal["rule", "agent"] = "agent"

    def as_issue(self, language: str) -> str:
        """One line for the revise loop's issue list."""
        if language == "zh":
            return f"连续性问题：{self.message}（原文：「{self.evidence}」；记忆：{self.memory}）"
        return f'Continuity: {self.message} (draft: "{self.evidence}"; memory: {self.memory})'


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def rule_checks(text: str, facts: ContinuityFacts | None, language: str = "en") -> list[ContinuityIssue]:
    """The certain contradictions, each with the sentence that shows it."""
    if facts is None:
        return []
    zh = language == "zh"
    sentences = _sentences(text)
    issues: list[ContinuityIssue] = []
    for dead in facts.dead:
        for s in sentences:
            if dead.name in s and _SPEECH.search(s) and not _MEMORY.search(s):
                message = (
                    f"{dead.name}已经死亡，却在本章说话或行动"
                    if zh
                    else f"{dead.name} is dead but speaks or acts"
                )
                memory = (
                    f"{dead.name}已于第{dead.chapter}章死亡"
                    if zh
                    else f"{dead.name} died in chapter {dead.chapter}"
                )
                issues.append(
                    ContinuityIssue(
                        kind="dead_character", message=message, evidence=s, memory=memory, source="rule"
                    )
                )
                break
    for name, place in facts.locations.items():
        travelled = False
        for s in sentences:
            if _TRAVEL.search(s):
                travelled = True
            if name not in s or travelled:
                if name in s:
                    break  # first appearance after a journey: nothing to contradict
                continue
            elsewhere = next(
                (p for p in facts.places if p != place and p in s and place not in s and p not in place), None
            )
            if elsewhere is not None:
                message = (
                    f"{name}出现在{elsewhere}，但没有交代如何离开{place}"
                    if zh
                    else f"{name} is at {elsewhere} with no journey from {place}"
                )
                memory = (
                    f"上一章结束时{name}在{place}"
                    if zh
                    else f"{name} was at {place} when the last chapter ended"
                )
                issues.append(
                    ContinuityIssue(
                        kind="location", message=message, evidence=s, memory=memory, source="rule"
                    )
                )
            break
    return issues


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def verified(issues: Sequence[ContinuityIssue], text: str) -> list[ContinuityIssue]:
    """Only issues whose evidence is really in the draft (whitespace aside), and not twice."""
    body = _squash(text)
    out: list[ContinuityIssue] = []
    seen: set[str] = set()
    for issue in issues:
        quote = _squash(issue.evidence.strip().strip('"“”「」'))
        if len(quote) >= 4 and quote in body and quote not in seen:
            seen.add(quote)
            out.append(issue)
    return out


class _AgentIssues(_Loose):
    issues: list[ContinuityIssue] = Field(default_factory=list)


_TASK = {
    "zh": "请对照上面的故事记忆检查下面的章节草稿是否有连续性错误（已死亡的人物出场、地点与时间线矛盾、"
    "人物设定或世界规则被违反）。每个问题都必须逐字引用草稿中的原句作为证据，并写出记忆中的相应事实；"
    "没有问题就返回空列表。",
    "en": "Check the draft below against the story memory above for continuity errors (a dead character "
    "appearing, a place that contradicts the timeline, a broken character trait or world rule). Quote the "
    "draft's exact sentence as evidence for each issue and state what memory says; return an empty list "
    "when there is none.",
}
_FACTS = {"zh": "记忆中的事实", "en": "Facts from memory"}
_DRAFT = {"zh": "章节草稿", "en": "Draft"}


def continuity_task(text: str, facts: ContinuityFacts | None, language: str) -> str:
    lang = "zh" if language == "zh" else "en"
    parts = []
    if facts is not None and (rendered := facts.render(lang)):
        parts.append(f"{_FACTS[lang]}:\n{rendered}")
    parts += [f"{_DRAFT[lang]}:\n{text}", _TASK[lang], schema_fence(_AgentIssues, lang)]
    return "\n\n".join(parts)


def agent_issues(answer: Any, text: str) -> list[ContinuityIssue]:
    """The agent's answer (an `_AgentIssues` or anything), verified against the draft."""
    raw = getattr(answer, "issues", None) or []
    return verified(
        [ContinuityIssue.model_validate({**i.model_dump(), "source": "agent"}) for i in raw], text
    )


async def check(call: Any, req: Any, text: str, plan: Any = None) -> list[ContinuityIssue]:
    """Rule checks, then the continuity agent (same shared prompt prefix as the chapter's other
    agents); an agent that cannot answer adds nothing and is recorded as degraded on `call.run`."""
    from storyloom.agents import ask_json
    from storyloom.apps.novel import prompts

    inp = req.input
    lang = "zh" if inp.language == "zh" else "en"
    found = rule_checks(text, req.continuity, lang)
    shared = prompts.shared_part(inp, req.previous_summary, plan)
    role = prompts.role_line("continuity", lang)
    messages = prompts.layout(lang, shared, f"{role}\n\n{continuity_task(text, req.continuity, lang)}")
    empty = _AgentIssues()
    answer = await ask_json(call, messages, _AgentIssues, default=lambda: empty)
    seen = {i.evidence for i in found}
    return [*found, *(i for i in agent_issues(answer, text) if i.evidence not in seen)]
