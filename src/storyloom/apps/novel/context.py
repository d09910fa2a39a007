"""One context builder for every agent of a chapter, under a token budget at any chapter number.

What a chapter's agents need to know, most important first: the chapter's own outline, the seam
(the previous chapter's last paragraphs), the characters in it (bible entry + current state), the
last K summaries, foreshadowing that is due, the bible's world and style, older chapters that
matter here (BM25 over their memory summaries against this chapter's outline), and where the next
chapter goes. Sections are granted budget in that order and cut to what is left, so chapter 200
costs the same prompt as chapter 10. The pack is rendered once per chapter and carried in the
request: every agent and version of the chapter sends the same bytes (a cached prompt prefix).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field
from rank_bm25 import BM25Okapi

from storyloom.apps.novel.bible import StoryBible, render_bible
from storyloom.apps.novel.continuity import ContinuityFacts
from storyloom.apps.novel.memory import CharacterSheet, MemoryRecord, character_sheets, open_threads
from storyloom.apps.novel.outline import BookOutline, OutlineChapter
from storyloom.llm.tokens import estimate_tokens

__all__ = [
    "ContextBudget",
    "ContextPack",
    "ContextSection",
    "build_context",
    "chapter_request",
    "tail_paragraphs",
    "truncate_tokens",
]

_ORDER = ("bible", "characters", "foreshadowing", "retrieved", "recent", "seam", "next", "chapter")
_PRIORITY = ("chapter", "seam", "characters", "recent", "foreshadowing", "bible", "retrieved", "next")
_TITLES = {
    "zh": {
        "bible": "故事设定", "characters": "本章人物", "foreshadowing": "待回收的伏笔",
        "retrieved": "相关前文", "recent": "前情提要", "seam": "上一章结尾", "next": "下一章",
        "chapter": "本章大纲",
    },
    "en": {
        "bible": "Story bible", "characters": "Characters in this chapter",
        "foreshadowing": "Foreshadowing due", "retrieved": "Earlier chapters that matter here",
        "recent": "Previously", "seam": "The previous chapter ended", "next": "Next chapter",
        "chapter": "This chapter",
    },
}  # fmt: skip


class ContextBudget(BaseModel):
    total_tokens: int = Field(default=6000, ge=200, le=200_000)
    recent_k: int = Field(default=3, ge=0, le=50)
    retrieved_k: int = Field(default=3, ge=0, le=50)
    tail_chars: int = Field(default=1200, ge=0, le=20_000)


class ContextSection(BaseModel):
    name: str
    text: str
    tokens: int


class ContextPack(BaseModel):
    number: int
    language: str = "en"
    sections: list[ContextSection] = Field(default_factory=list)
    tokens: int = 0
    budget: int = 0
    dropped: list[str] = Field(default_factory=list)  # sections cut to nothing by the budget
    cut: list[str] = Field(default_factory=list)  # sections shortened to fit

    def render(self) -> str:
        return _render(self.sections, self.language)

    def section(self, name: str) -> str:
        return next((s.text for s in self.sections if s.name == name), "")


def _render(sections: Sequence[ContextSection], language: str) -> str:
    titles = _TITLES["zh" if language == "zh" else "en"]
    by_name = {s.name: s for s in sections}
    blocks = []
    for name in _ORDER:
        s = by_name.get(name)
        if s is not None and s.text:
            blocks.append(
                f"【{titles[name]}】\n{s.text}" if language == "zh" else f"## {titles[name]}\n{s.text}"
            )
    return "\n\n".join(blocks)


def truncate_tokens(text: str, tokens: int, *, keep: str = "head") -> str:
    """The longest head (or tail) of `text` within `tokens` estimated tokens."""
    if tokens <= 0:
        return ""
    if estimate_tokens(text) <= tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        piece = text[:mid] if keep == "head" else text[len(text) - mid :]
        if estimate_tokens(piece) + 1 <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return (text[:lo] + "…") if keep == "head" else ("…" + text[len(text) - lo :])


_WORDS = re.compile(r"[a-z0-9]+")
_CJK = re.compile(r"[\u3400-\u9fff]")


def _tokens(text: str) -> list[str]:
    """BM25 terms: lowercase words, plus Chinese character bigrams (Chinese has no spaces)."""
    low = text.lower()
    terms = _WORDS.findall(low)
    cjk = "".join(_CJK.findall(low))
    terms.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return terms


def tail_paragraphs(text: str, chars: int) -> str:
    """The last whole paragraphs within `chars` (or the last paragraph's last whole sentences)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    kept: list[str] = []
    size = 0
    for p in reversed(paragraphs):
        if size + len(p) > chars:
            break
        kept.insert(0, p)
        size += len(p) + 2
    if kept:
        return "\n\n".join(kept)
    last = paragraphs[-1] if paragraphs else ""
    sentences = [x for x in re.split(r"(?<=[。！？.!?”\"])\s*", last) if x]
    out = ""
    for sentence in reversed(sentences):
        if len(out) + len(sentence) + 1 > chars:
            break
        out = sentence + ("" if not out else (" " if not _CJK.search(sentence) else "") + out)
    return out or last[-chars:]


def _chapter_text(c: OutlineChapter, language: str) -> str:
    sep = "：" if language == "zh" else ": "
    lines = [f"{c.number}. {c.title}".strip(), c.summary]
    if c.beats:
        lines.extend(f"- {b}" for b in c.beats)
    if c.pov:
        lines.append(("视角" if language == "zh" else "POV") + sep + c.pov)
    return "\n".join(x for x in lines if x)


def _in_chapter(
    bible: StoryBible, chapter: OutlineChapter | None, previous: MemoryRecord | None
) -> list[str]:
    """Characters named in this chapter's outline, plus those present at the end of the previous one."""
    text = _chapter_text(chapter, bible.language) if chapter else ""
    names = [c.name for c in bible.characters if c.name and c.name in text]
    if previous is not None:
        names += [ch.name for ch in previous.memory.character_changes if ch.name and ch.name in text]
    if not names and bible.characters:  # nobody named: the leads carry the chapter
        names = [c.name for c in bible.characters[:2]]
    return list(dict.fromkeys(names))


def _sheet_text(sheet: CharacterSheet, language: str) -> str:
    parts = [p for p in (sheet.role, ", ".join(sheet.traits[:6]), sheet.goals, sheet.voice) if p]
    state = [p for p in (sheet.location, sheet.condition) if p]
    if not sheet.alive:
        state.append(
            ("已死亡（第{n}章）" if language == "zh" else "DEAD since chapter {n}").format(n=sheet.died_in)
        )
    if sheet.knowledge:
        state.append(("知道" if language == "zh" else "knows") + ": " + "; ".join(sheet.knowledge[-3:]))
    line = f"- {sheet.name}: " + "; ".join(parts)
    return line + (f" [{'; '.join(state)}]" if state else "")


def build_context(
    bible: StoryBible,
    outline: BookOutline | None,
    memory: Sequence[MemoryRecord],
    number: int,
    *,
    previous_text: str = "",
    budget: ContextBudget | None = None,
) -> ContextPack:
    """The context of chapter `number` from data already loaded (pure: no I/O, no model call)."""
    budget = budget or ContextBudget()
    lang = "zh" if bible.language == "zh" else "en"
    earlier = sorted((m for m in memory if m.number < number), key=lambda m: m.number)
    chapter = outline.chapter(number) if outline is not None else None
    following = outline.chapter(number + 1) if outline is not None else None
    previous = earlier[-1] if earlier and earlier[-1].number == number - 1 else None
    names = _in_chapter(bible, chapter, previous)
    sheets = {s.name: s for s in character_sheets(bible, earlier)}
    recent = earlier[-budget.recent_k :] if budget.recent_k else []
    older = earlier[: -budget.recent_k] if budget.recent_k else list(earlier)
    wanted: dict[str, str] = {}
    if chapter is not None:
        wanted["chapter"] = _chapter_text(chapter, lang)
    if previous_text and budget.tail_chars:
        wanted["seam"] = tail_paragraphs(previous_text, budget.tail_chars)
    wanted["characters"] = "\n".join(_sheet_text(sheets[n], lang) for n in names if n in sheets)
    wanted["recent"] = "\n".join(f"{m.number}. {m.memory.summary}" for m in recent if m.memory.summary)
    threads = open_threads(earlier, at_chapter=number)
    due = [t for t in threads if t.due] or threads[:3]
    wanted["foreshadowing"] = "\n".join(f"- {t.key} ({t.opened_in}): {t.detail}" for t in due)
    wanted["bible"] = render_bible(bible, characters=[], compact_others=True)
    if older and budget.retrieved_k and chapter is not None:
        corpus = [_tokens(m.memory.summary) or ["_"] for m in older]
        scores = BM25Okapi(corpus).get_scores(_tokens(_chapter_text(chapter, lang)))
        ranked = sorted(range(len(older)), key=lambda i: (-scores[i], -older[i].number))[: budget.retrieved_k]
        picked = sorted((older[i] for i in ranked if scores[i] > 0), key=lambda m: m.number)
        wanted["retrieved"] = "\n".join(f"{m.number}. {m.memory.summary}" for m in picked)
    if following is not None:
        wanted["next"] = f"{following.number}. {following.title}: {following.summary}"
    return _fit(wanted, number, lang, budget.total_tokens)


def _fit(wanted: dict[str, str], number: int, lang: str, total: int) -> ContextPack:
    """Grant each section what is left of the budget in priority order (headers and joins counted)."""
    titles = _TITLES[lang]
    left = total
    sections: list[ContextSection] = []
    dropped, cut = [], []
    for name in _PRIORITY:
        text = wanted.get(name, "")
        if not text:
            continue
        overhead = estimate_tokens(f"## {titles[name]}\n") + 2
        room = left - overhead
        keep = "tail" if name == "seam" else "head"
        fitted = truncate_tokens(text, room, keep=keep) if room > 8 else ""
        if not fitted.strip("…"):
            dropped.append(name)
            continue
        if fitted != text:
            cut.append(name)
        tokens = estimate_tokens(fitted)
        sections.append(ContextSection(name=name, text=fitted, tokens=tokens))
        left -= tokens + overhead
    pack = ContextPack(
        number=number, language=lang, sections=sections, budget=total, dropped=dropped, cut=cut
    )
    pack.tokens = estimate_tokens(pack.render())
    while pack.tokens > total and pack.sections:  # the estimate is per piece; the join may add a token
        last = pack.sections[-1]
        last.text = truncate_tokens(last.text, last.tokens - (pack.tokens - total) - 2)
        last.tokens = estimate_tokens(last.text)
        pack.tokens = estimate_tokens(pack.render())
        if not last.text:
            pack.sections.pop()
    return pack


async def chapter_request(
    store: Any,
    project_id: str,
    number: int,
    *,
    tenant: str = "default",
    versions: int = 2,
    budget: ContextBudget | None = None,
    **options: Any,
) -> tuple[Any, ContextPack]:
    """The `ChapterRequest` of chapter `number`, from the bible, outline and memory **as they are
    now** (call it when the chapter runs, after the previous chapter is chosen, never at submit)."""
    from storyloom.apps.novel.models import ChapterRequest, Character, NovelInput

    found_bible = await store.bible(project_id, tenant=tenant)
    bible: StoryBible = found_bible.bible if found_bible is not None else StoryBible()
    found_outline = await store.outline(project_id, tenant=tenant)
    outline: BookOutline | None = found_outline.outline if found_outline is not None else None
    memory = await store.memory(project_id, tenant=tenant, upto=number)
    previous = await store.chosen_text(project_id, number - 1, tenant=tenant) if number > 1 else None
    pack = build_context(
        bible, outline, memory, number, previous_text=previous.text if previous else "", budget=budget
    )
    chapter = outline.chapter(number) if outline is not None else None
    lang = "zh" if bible.language == "zh" else "en"
    style = bible.style
    style_text = ", ".join(p for p in (style.person, style.tense, style.tone) if p)
    if style.banned_phrases:
        style_text += ("；禁用：" if lang == "zh" else "; never use: ") + ", ".join(style.banned_phrases)
    names = set(_in_chapter(bible, chapter, memory[-1] if memory else None))
    cast = [
        Character(
            name=c.name[:100],
            role=c.role[:200],
            traits=c.traits[:20],
            background=c.arc[:2000],
            goals=c.goals[:1000],
        )
        for c in bible.characters
        if c.name in names
    ]
    summary = next((m.memory.summary for m in reversed(memory) if m.number == number - 1), None)
    if summary is None and previous is not None:
        summary = previous.summary
    request = ChapterRequest(
        input=NovelInput(
            overall_outline=bible.premise[:20000],
            chapter_outline=(_chapter_text(chapter, lang) if chapter else f"{number}")[:20000],
            genre=bible.genre[:100],
            characters=cast[:30],
            style=style_text[:1000],
            target_length=chapter.target_length if chapter else None,
            language=lang,
            book_context=pack.render(),
        ),
        versions=versions,
        previous_summary=summary[:5000] if summary else None,
        continuity=ContinuityFacts.from_sheets(character_sheets(bible, memory), number=number),
        **options,
    )
    return request, pack
