"""Rewrite a passage: a span of a chapter's chosen text and an instruction ("more tension",
"shorter", "fix the continuity issue") → candidate passages in the chapter's voice; accepting
one makes a new chosen version, re-extracts the chapter's memory and marks later chapters stale.

The candidates are written by a `novel.rewrite` job (the API process holds no model client);
each sees the style guide, the text before and after the span, and the instruction, so the
passage joins its surroundings. `novel.remember` re-extracts one chapter's memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from storyloom.apps.novel.bible import StoryBible
from storyloom.apps.novel.book.control import REMEMBER_JOB_KIND, REWRITE_JOB_KIND, BookControl
from storyloom.apps.novel.bookstore import BookStore
from storyloom.apps.novel.memory import remember_chapter
from storyloom.errors import ConflictError, InputError
from storyloom.flow import Flow, StepContext
from storyloom.runner import AppJob

__all__ = ["REMEMBER_JOB_KIND", "REWRITE_JOB_KIND", "remember_job", "rewrite_job", "splice"]

_BEFORE_CHARS = 1500
_AFTER_CHARS = 800

_PROMPT = {
    "en": (
        "You are revising one passage of chapter {number} of a novel. Keep the chapter's voice, "
        "person, tense and names; change only what the instruction asks.\n\nStyle: {style}\n\n"
        "Text before the passage:\n{before}\n\nTHE PASSAGE:\n{passage}\n\n"
        "Text after the passage:\n{after}\n\n"
        "Instruction: {instruction}\n\nAnswer with the rewritten passage only, no comments."
    ),
    "zh": (
        "你在修改小说第{number}章中的一段。保持本章的语气、人称、时态和人名，只按要求修改。\n\n文风：{style}\n\n"
        "前文：\n{before}\n\n【待改段落】\n{passage}\n\n后文：\n{after}\n\n修改要求：{instruction}\n\n只输出改写后的段落，不要解释。"
    ),
}

rewrite_flow = Flow("rewrite")


@rewrite_flow.step()
async def candidates(ctx: StepContext[Any]) -> dict[str, Any]:
    req = ctx.run_input
    template = _PROMPT["zh" if req["language"] == "zh" else "en"]
    prompt = template.format(
        **{k: req[k] for k in ("number", "style", "before", "passage", "after", "instruction")}
    )
    temps = [0.7 + 0.15 * i for i in range(int(req["candidates"]))]
    texts = await asyncio.gather(*(ctx.llm.text(prompt, temperature=min(t, 1.3)) for t in temps))
    return {"passages": [t.strip() for t in texts]}


def splice(text: str, start: int, end: int, passage: str) -> str:
    return text[:start] + passage + text[end:]


def _style(bible: StoryBible) -> str:
    s = bible.style
    parts = [p for p in (s.person, s.tense, s.tone) if p]
    if s.banned_phrases:
        parts.append("never use: " + ", ".join(s.banned_phrases))
    return "; ".join(parts) or "as in the surrounding text"


async def rewrite_job(job: AppJob[Any]) -> dict[str, Any]:
    p = job.payload
    book_id, number, version_id = p.get("book_id"), p.get("chapter"), p.get("version_id")
    start, end, instruction, count = (
        p.get("start"),
        p.get("end"),
        p.get("instruction"),
        p.get("candidates", 2),
    )
    if not (
        isinstance(book_id, str)
        and isinstance(number, int)
        and isinstance(version_id, str)
        and isinstance(start, int)
        and isinstance(end, int)
        and isinstance(instruction, str)
        and isinstance(count, int)
    ):
        raise InputError(
            "a rewrite job needs book_id, chapter, version_id, start, end, instruction, candidates."
        )
    books = BookStore(job.db)
    chosen = await books.chosen_text(book_id, number, tenant=job.tenant)
    if chosen is None or chosen.version_id != version_id:
        raise ConflictError(f"chapter {number}'s chosen text changed since the rewrite was asked for.")
    found = await books.bible(book_id, tenant=job.tenant)
    bible = found.bible if found is not None else StoryBible()
    text = chosen.text
    language = "zh" if bible.language == "zh" else "en"
    run_input = {
        "number": number,
        "language": language,
        "style": _style(bible),
        "before": text[max(0, start - _BEFORE_CHARS) : start],
        "passage": text[start:end],
        "after": text[end : end + _AFTER_CHARS],
        "instruction": instruction,
        "candidates": count,
    }
    run = await job.run_flow(rewrite_flow, run_input, language=language)
    passages = [str(x) for x in run.outputs["candidates"]["passages"]]
    return {
        "book_id": book_id,
        "chapter": number,
        "version_id": version_id,
        "start": start,
        "end": end,
        "instruction": instruction,
        "candidates": [{"passage": x, "text": splice(text, start, end, x)} for x in passages if x],
    }


async def remember_job(job: AppJob[Any]) -> dict[str, Any]:
    book_id, number = job.payload.get("book_id"), job.payload.get("chapter")
    if not isinstance(book_id, str) or not isinstance(number, int):
        raise InputError("a remember job needs 'book_id' and 'chapter'.")
    control = BookControl(job.db, job.queue)
    record = await remember_chapter(
        BookStore(job.db),
        project_id=book_id,
        number=number,
        tenant=job.tenant,
        services=job.run_services(),
        run_id=job.id,
        checkpoints=job.ctx.checkpoints,
    )
    if record is None:
        return {"book_id": book_id, "chapter": number, "remembered": False}
    await control.staleness.memory_fresh(record.chapter_id)
    return {"book_id": book_id, "chapter": number, "remembered": True, "revision": record.revision}
