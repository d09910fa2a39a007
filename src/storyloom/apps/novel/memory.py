"""Story memory: what a chosen chapter changed, extracted once and folded into ledgers.

After a chapter's version is chosen, the memory agent reads it and answers a `ChapterMemory`: its
summary, each character's new state, foreshadowing opened / advanced / paid off, timeline events and
new entities. Rows are versioned per chapter (a new choice or rewrite adds a revision), and two
views are folded from the latest revision of every chapter in order: the open-foreshadowing ledger
and the character sheets. The folding is pure (these functions) so the context builder, the
continuity rules and the API read the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator

from storyloom.agents import RunServices
from storyloom.apps.novel.bible import Relationship, StoryBible, _Loose, render_bible
from storyloom.apps.novel.bookprompts import layout, schema_fence
from storyloom.flow import CheckpointStore, EventSink, Flow, StepContext, run_flow

if TYPE_CHECKING:
    from storyloom.apps.novel.bookstore import BookStore

__all__ = [
    "ChapterMemory",
    "CharacterChange",
    "CharacterSheet",
    "Foreshadow",
    "MemoryRecord",
    "NewEntity",
    "OpenThread",
    "TimelineEvent",
    "character_sheets",
    "fallback_memory",
    "memory_flow",
    "memory_step",
    "open_threads",
    "remember_chapter",
    "thread_key",
]

_DEATH = re.compile(r"\b(dead|died|killed|slain|deceased)\b|死|亡|阵亡|身亡|遇害|牺牲", re.I)


class CharacterChange(_Loose):
    name: str = Field(default="", description="the character")
    location: str = Field(default="", description="where the character is at the chapter's end")
    condition: str = Field(
        default="", description="health and state at the chapter's end, e.g. wounded, dead"
    )
    knowledge: list[str] = Field(default_factory=list, description="what the character learned")
    relationships: list[Relationship] = Field(default_factory=list)


class Foreshadow(_Loose):
    key: str = Field(default="", description="a short name of the thread; reuse an open thread's key")
    action: Literal["opened", "advanced", "paid_off"] = "opened"
    detail: str = Field(default="", description="what was planted, advanced or resolved")
    due_chapter: int | None = Field(default=None, description="the chapter by which it should pay off")

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, value: Any) -> Any:
        text = str(value or "").lower().replace(" ", "_").replace("-", "_")
        if text in ("opened", "advanced", "paid_off"):
            return text
        if "pay" in text or "resolv" in text or "回收" in text:
            return "paid_off"
        return "advanced" if "advanc" in text or "推进" in text else "opened"

    @field_validator("due_chapter", mode="before")
    @classmethod
    def _due(cls, value: Any) -> Any:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class TimelineEvent(_Loose):
    when: str = Field(default="", description="when it happens in story time")
    event: str = Field(default="", description="what happens")
    location: str = Field(default="", description="where it happens")
    characters: list[str] = Field(default_factory=list)


class NewEntity(_Loose):
    name: str = ""
    kind: str = Field(default="", description="person, place, object, faction, term")
    description: str = ""


class ChapterMemory(_Loose):
    summary: str = Field(default="", description="the chapter in three or four sentences")
    character_changes: list[CharacterChange] = Field(default_factory=list)
    foreshadowing: list[Foreshadow] = Field(default_factory=list)
    timeline: list[TimelineEvent] = Field(default_factory=list)
    entities: list[NewEntity] = Field(default_factory=list)


class MemoryRecord(BaseModel):
    """One stored revision of one chapter's memory."""

    id: str
    project_id: str
    chapter_id: str
    number: int
    version_id: str | None
    revision: int
    memory: ChapterMemory
    created_at: float


class OpenThread(BaseModel):
    key: str
    opened_in: int
    advanced_in: list[int] = Field(default_factory=list)
    detail: str = ""
    due_chapter: int | None = None
    due: bool = False  # at the chapter asked about, its payoff is due (or overdue)


class CharacterSheet(BaseModel):
    name: str
    role: str = ""
    traits: list[str] = Field(default_factory=list)
    goals: str = ""
    arc: str = ""
    voice: str = ""
    location: str = ""
    condition: str = ""
    alive: bool = True
    died_in: int | None = None
    knowledge: list[str] = Field(default_factory=list)
    relationships: dict[str, str] = Field(default_factory=dict)
    last_seen: int | None = None


def thread_key(text: str) -> str:
    """Keys match loosely (case, spaces, punctuation): models rarely repeat a key byte for byte."""
    return re.sub(r"[\W_]+", "", text.lower())


def open_threads(
    records: Sequence[MemoryRecord], *, at_chapter: int | None = None, due_window: int = 3
) -> list[OpenThread]:
    """Foreshadowing opened and not yet paid off, in the order it was opened. Due: its due chapter
    is within `due_window` of `at_chapter` (or past), or it has been open for 30 chapters."""
    threads: dict[str, OpenThread] = {}
    for rec in sorted(records, key=lambda r: r.number):
        for f in rec.memory.foreshadowing:
            key = thread_key(f.key or f.detail)
            if not key:
                continue
            if f.action == "opened" and key not in threads:
                threads[key] = OpenThread(
                    key=f.key or f.detail[:60],
                    opened_in=rec.number,
                    detail=f.detail,
                    due_chapter=f.due_chapter,
                )
            elif f.action == "advanced" and key in threads:
                threads[key].advanced_in.append(rec.number)
                if f.detail:
                    threads[key].detail = f.detail
                if f.due_chapter:
                    threads[key].due_chapter = f.due_chapter
            elif f.action == "paid_off":
                threads.pop(key, None)
    out = list(threads.values())
    if at_chapter is not None:
        for t in out:
            t.due = (t.due_chapter is not None and t.due_chapter <= at_chapter + due_window) or (
                at_chapter - t.opened_in >= 30
            )
    return out


def character_sheets(bible: StoryBible | None, records: Sequence[MemoryRecord]) -> list[CharacterSheet]:
    """The bible's characters (and any memory introduced), with every chapter's changes applied in order."""
    sheets: dict[str, CharacterSheet] = {}
    for c in bible.characters if bible is not None else []:
        sheets[c.name] = CharacterSheet(
            name=c.name,
            role=c.role,
            traits=list(c.traits),
            goals=c.goals,
            arc=c.arc,
            voice=c.voice,
            relationships={r.name: r.relation for r in c.relationships if r.name},
        )
    for rec in sorted(records, key=lambda r: r.number):
        for change in rec.memory.character_changes:
            if not change.name.strip():
                continue
            sheet = sheets.setdefault(change.name, CharacterSheet(name=change.name))
            sheet.last_seen = rec.number
            if change.location:
                sheet.location = change.location
            if change.condition:
                sheet.condition = change.condition
                if _DEATH.search(change.condition) and sheet.alive:
                    sheet.alive, sheet.died_in = False, rec.number
            for k in change.knowledge:
                if k not in sheet.knowledge:
                    sheet.knowledge.append(k)
            for r in change.relationships:
                if r.name:
                    sheet.relationships[r.name] = r.relation
    return list(sheets.values())


# -- the memory agent ----------------------------------------------------------------------------


_TASK = {
    "zh": "请阅读下面的第{n}章正文，提取故事记忆：本章概要（三四句话）；每个出场人物在本章结束时的位置、状态"
    "（如受伤、死亡）、新获知的信息和关系变化；伏笔（新埋下的 opened、推进的 advanced、回收的 paid_off；"
    "推进或回收已有伏笔时使用其原有 key）；时间线事件；新出现的人物、地点、物品或术语。",
    "en": "Read chapter {n} below and extract the story memory: a summary (three or four sentences); for "
    "each character present, where they are and their condition at the chapter's end (e.g. wounded, "
    "dead), what they learned and how their relationships changed; foreshadowing (opened, advanced or "
    "paid_off; reuse an open thread's key when advancing or paying it off); timeline events; new people, "
    "places, objects or terms.",
}
_OPEN = {"zh": "未回收的伏笔", "en": "Open foreshadowing"}
_TEXT = {"zh": "第{n}章正文", "en": "Chapter {n}"}


def fallback_memory(text: str, summary: str = "") -> ChapterMemory:
    """When the agent cannot answer: the summary we have (or the first sentences); nothing invented."""
    if not summary:
        parts = [p for p in re.split(r"(?<=[。！？.!?])\s*", text.strip()) if p]
        summary = "".join(parts[:3]) if parts else text[:300]
    return ChapterMemory(summary=summary)


async def memory_step(ctx: StepContext[Any]) -> dict[str, Any]:
    """run_input: {number, text, language, bible (JSON), open: [keys], summary?}. A bad answer
    degrades to `fallback_memory` (recorded as `degraded`)."""
    req = ctx.run_input
    lang = "zh" if req.get("language") == "zh" else "en"
    bible = StoryBible.model_validate(req.get("bible") or {"language": lang})
    n = int(req["number"])
    shared = render_bible(bible)
    parts = []
    if req.get("open"):
        parts.append(f"{_OPEN[lang]}: " + "; ".join(str(k) for k in req["open"]))
    parts.append(f"{_TEXT[lang].format(n=n)}:\n{req['text']}")
    parts.append(_TASK[lang].format(n=n))
    parts.append(schema_fence(ChapterMemory, lang))
    sentinel = fallback_memory(str(req["text"]), str(req.get("summary") or ""))
    memory = await ctx.llm.json(
        layout(lang, shared, "\n\n".join(parts)),
        schema=ChapterMemory,
        default=lambda: sentinel,
        max_tokens=2000,
    )
    if not memory.summary.strip():
        memory.summary = sentinel.summary
    run = getattr(ctx.llm, "run", None)
    return {
        "memory": memory.model_dump(mode="json"),
        "degraded": "the memory agent could not answer; kept the summary only"
        if memory is sentinel
        else None,
        "run": run.model_dump(mode="json") if run is not None else None,
    }


def memory_flow() -> Flow:
    flow = Flow("chapter-memory")
    flow.add("memory", memory_step)
    return flow


async def remember_chapter(
    store: BookStore,
    *,
    project_id: str,
    number: int,
    tenant: str = "default",
    services: RunServices,
    run_id: str,
    checkpoints: CheckpointStore | None = None,
    sink: EventSink | None = None,
) -> MemoryRecord | None:
    """Extract and store the memory of chapter `number`'s **chosen** version as it is now (None:
    the chapter has no chosen version). The open ledger it is shown is read at the same moment,
    so chapters remembered in order see each other's threads."""
    chosen = await store.chosen_text(project_id, number, tenant=tenant)
    if chosen is None:
        return None
    found = await store.bible(project_id, tenant=tenant)
    bible = found.bible if found is not None else StoryBible()
    ledger = await store.open_foreshadowing(project_id, tenant=tenant, at_chapter=number)
    run_input = {
        "number": number,
        "text": chosen.text,
        "language": bible.language,
        "bible": bible.model_dump(mode="json"),
        "open": [t.key for t in ledger],
        "summary": chosen.summary or "",
    }
    result = await run_flow(
        memory_flow(), run_input, run_id=run_id, services=services, checkpoints=checkpoints, sink=sink
    )
    memory = ChapterMemory.model_validate(result.outputs["memory"]["memory"])
    return await store.save_memory(project_id, number, memory, tenant=tenant, version_id=chosen.version_id)
