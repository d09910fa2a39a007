"""The story bible: what stays true across the whole book, and the agent that drafts it.

Models answer lists where strings were asked and the reverse, omit fields, invent extra ones: every
model here is lenient on the way in (extra keys ignored, strings and lists coerced) so a sloppy but
meaningful answer still counts. The author's own premise, genre and language always win over what
the model wrote back. Versions live in `bookstore.BookStore` (an edit is a new version).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storyloom.apps.novel.bookprompts import layout, schema_fence
from storyloom.flow import StepContext

__all__ = [
    "BibleCharacter",
    "Faction",
    "GlossaryEntry",
    "Location",
    "Relationship",
    "StoryBible",
    "StyleGuide",
    "World",
    "bible_step",
    "default_bible",
    "render_bible",
]


def _text(value: Any) -> Any:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _texts(value: Any) -> Any:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [v if isinstance(v, str) else str(v) for v in value if v is not None]
    return [] if value is None else value


class _Loose(BaseModel):
    """Ignore extra keys; coerce str <-> list[str] where the field says which it wants."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _coerce(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is None:
            return value
        if field.annotation is str:
            return _text(value)
        if field.annotation == list[str]:
            return _texts(value)
        return value


class Relationship(_Loose):
    name: str = Field(default="", description="the other character")
    relation: str = Field(default="", description="what they are to each other")


class BibleCharacter(_Loose):
    name: str = Field(description="the character's name")
    role: str = Field(default="", description="protagonist, mentor, rival...")
    traits: list[str] = Field(default_factory=list, max_length=30)
    goals: str = Field(default="", description="what the character wants")
    arc: str = Field(default="", description="how the character changes over the book")
    relationships: list[Relationship] = Field(default_factory=list, max_length=50)
    voice: str = Field(default="", description="how the character speaks")


class Location(_Loose):
    name: str = Field(description="the place's name")
    description: str = ""


class Faction(_Loose):
    name: str = Field(description="the faction's name")
    description: str = ""
    goals: str = ""


class World(_Loose):
    setting: str = Field(default="", description="time, place and feel of the world")
    rules: list[str] = Field(default_factory=list, description="rules the story must never break")


class StyleGuide(_Loose):
    person: str = Field(default="third", description="narrative person: first or third")
    tense: str = Field(default="past", description="narrative tense: past or present")
    tone: str = Field(default="", description="the book's tone")
    banned_phrases: list[str] = Field(default_factory=list, description="phrases the prose must avoid")


class GlossaryEntry(_Loose):
    term: str = ""
    meaning: str = ""


class StoryBible(_Loose):
    premise: str = ""
    genre: str = ""
    language: Literal["zh", "en"] = "en"
    world: World = Field(default_factory=World)
    locations: list[Location] = Field(default_factory=list, max_length=200)
    factions: list[Faction] = Field(default_factory=list, max_length=100)
    characters: list[BibleCharacter] = Field(default_factory=list, max_length=200)
    style: StyleGuide = Field(default_factory=StyleGuide)
    glossary: list[GlossaryEntry] = Field(default_factory=list, max_length=500)

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, value: Any) -> Any:
        return value if value in ("zh", "en") else "en"

    def character(self, name: str) -> BibleCharacter | None:
        return next((c for c in self.characters if c.name == name), None)


class _BibleDraft(_Loose):
    """What the agent is asked for (premise, genre and language are the author's, not the model's)."""

    world: World = Field(default_factory=World)
    locations: list[Location] = Field(default_factory=list)
    factions: list[Faction] = Field(default_factory=list)
    characters: list[BibleCharacter] = Field(default_factory=list)
    style: StyleGuide = Field(default_factory=StyleGuide)
    glossary: list[GlossaryEntry] = Field(default_factory=list)


def default_bible(premise: str, genre: str, language: str) -> StoryBible:
    """The bible when the agent could not answer: the author's own words and nothing invented."""
    lang: Literal["zh", "en"] = "zh" if language == "zh" else "en"
    return StoryBible(premise=premise, genre=genre, language=lang, world=World(setting=premise))


_SEP = {"zh": "：", "en": ": "}
_LABELS = {
    "zh": {
        "premise": "故事梗概", "genre": "类型", "world": "世界观", "rules": "世界规则", "locations": "地点",
        "factions": "势力", "characters": "人物", "style": "文风", "banned": "禁用语", "glossary": "术语",
        "person": "人称", "tense": "时态", "tone": "基调", "arc": "成长弧线", "voice": "说话方式",
        "goals": "目标", "rel": "关系",
    },
    "en": {
        "premise": "Premise", "genre": "Genre", "world": "World", "rules": "World rules",
        "locations": "Locations", "factions": "Factions", "characters": "Characters", "style": "Style guide",
        "banned": "Banned phrases", "glossary": "Glossary", "person": "person", "tense": "tense",
        "tone": "tone", "arc": "arc", "voice": "voice", "goals": "goals", "rel": "relationships",
    },
}  # fmt: skip


def render_character(c: BibleCharacter, language: str) -> str:
    lab, sep = _LABELS[_lang(language)], _SEP[_lang(language)]
    parts = [p for p in (c.role, ", ".join(c.traits)) if p]
    if c.goals:
        parts.append(f"{lab['goals']}{sep}{c.goals}")
    if c.arc:
        parts.append(f"{lab['arc']}{sep}{c.arc}")
    if c.voice:
        parts.append(f"{lab['voice']}{sep}{c.voice}")
    if c.relationships:
        rels = ", ".join(f"{r.name} ({r.relation})" for r in c.relationships if r.name)
        parts.append(f"{lab['rel']}{sep}{rels}")
    return f"- {c.name}" + (f"{sep}" + "; ".join(parts) if parts else "")


def _lang(language: str) -> str:
    return "zh" if language == "zh" else "en"


def render_bible(
    bible: StoryBible, *, characters: list[BibleCharacter] | None = None, compact_others: bool = True
) -> str:
    """The bible as prompt text. `characters` given: those in full, the others by name and role."""
    lang = _lang(bible.language)
    lab, sep = _LABELS[lang], _SEP[lang]
    lines = [f"{lab['premise']}{sep}{bible.premise}"] if bible.premise else []
    if bible.genre:
        lines.append(f"{lab['genre']}{sep}{bible.genre}")
    if bible.world.setting:
        lines.append(f"{lab['world']}{sep}{bible.world.setting}")
    if bible.world.rules:
        lines.append(f"{lab['rules']}{sep}" + "; ".join(bible.world.rules))
    if bible.locations:
        lines.append(
            f"{lab['locations']}{sep}" + "; ".join(_named(x.name, x.description) for x in bible.locations)
        )
    if bible.factions:
        lines.append(
            f"{lab['factions']}{sep}" + "; ".join(_named(x.name, x.description) for x in bible.factions)
        )
    full = bible.characters if characters is None else characters
    if bible.characters:
        lines.append(f"{lab['characters']}{sep}")
        lines.extend(render_character(c, lang) for c in full)
        if characters is not None and compact_others:
            shown = {c.name for c in full}
            others = [
                f"{c.name} ({c.role})" if c.role else c.name for c in bible.characters if c.name not in shown
            ]
            if others:
                lines.append("- … " + ", ".join(others))
    s = bible.style
    lines.append(
        f"{lab['style']}{sep}{lab['person']} {s.person}, {lab['tense']} {s.tense}, {lab['tone']} {s.tone}"
    )
    if s.banned_phrases:
        lines.append(f"{lab['banned']}{sep}" + "; ".join(s.banned_phrases))
    if bible.glossary:
        lines.append(f"{lab['glossary']}{sep}" + "; ".join(_named(g.term, g.meaning) for g in bible.glossary))
    return "\n".join(lines)


def _named(name: str, description: str) -> str:
    return f"{name} ({description})" if description else name


_TASK = {
    "zh": "请为这部{n}章的长篇小说《{title}》撰写故事圣经：世界观与规则、地点、势力、主要人物（性格、目标、"
    "成长弧线、人物关系、说话方式）、文风指南（人称、时态、基调、禁用语）和术语表。",
    "en": 'Write the story bible of the {n}-chapter novel "{title}": the world and its rules, locations, '
    "factions, the main characters (traits, goals, arc, relationships, voice), a style guide (person, "
    "tense, tone, banned phrases) and a glossary.",
}


def _shared(req: dict[str, Any]) -> str:
    lang = _lang(str(req.get("language")))
    lab, sep = _LABELS[lang], _SEP[lang]
    lines = [f"《{req['title']}》" if lang == "zh" else f"Title: {req['title']}"]
    lines.append(f"{lab['premise']}{sep}{req['premise']}")
    if req.get("genre"):
        lines.append(f"{lab['genre']}{sep}{req['genre']}")
    return "\n".join(lines)


async def bible_step(ctx: StepContext[Any]) -> dict[str, Any]:
    """The bible drafted from the premise (run_input: a `BookPlanRequest` as JSON). A bad answer
    degrades to `default_bible` (the premise alone), recorded in the step's `degraded`."""
    req = ctx.run_input
    lang = _lang(str(req.get("language")))
    task = (
        _TASK[lang].format(n=req["chapters"], title=req["title"]) + "\n\n" + schema_fence(_BibleDraft, lang)
    )
    sentinel = _BibleDraft()
    draft = await ctx.llm.json(layout(lang, _shared(req), task), schema=_BibleDraft, default=lambda: sentinel)
    degraded = (
        "the bible agent could not answer; the bible holds the premise only" if draft is sentinel else None
    )
    bible = StoryBible(
        premise=str(req["premise"]),
        genre=str(req.get("genre") or ""),
        language="zh" if lang == "zh" else "en",
        **{k: v for k, v in draft.model_dump().items()},
    )
    if not bible.world.setting:
        bible.world.setting = str(req["premise"])[:500]
    run = getattr(ctx.llm, "run", None)
    return {
        "bible": bible.model_dump(mode="json"),
        "run": run.model_dump(mode="json") if run is not None else None,
        "degraded": degraded,
    }
