"""Quality measures stored with every version, and their trend across a book.

Cheap, model-free measures, so every version gets them and chapter 20 can be compared with
chapter 1 without paying a judge: LongWriter's length score (and adherence = length / target),
n-gram repetition (the share of repeated word 3-grams, Chinese character 4-grams), a cliché
("slop") score from a phrase list per language (hits per 1,000 words or characters,
`data/slop.json`), plus the continuity issues and the judge's verdict the chapter flow found.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import Any

from pydantic import BaseModel, Field

from storyloom.apps.novel.length import count_length, length_score

__all__ = [
    "BookEval",
    "ChapterEval",
    "QualityMeasures",
    "Trend",
    "book_eval",
    "measure",
    "ngram_repetition",
    "slop_phrases",
    "slop_score",
    "trend",
]

_WORD = re.compile(r"[A-Za-z0-9']+")
_CJK = re.compile(r"[\u3400-\u9fff]")
# Higher is worse for these; for the others (length_score, adherence closeness, quality) higher is better.
_WORSE_WHEN_HIGHER = frozenset({"repetition", "slop", "continuity_issues"})


class QualityMeasures(BaseModel):
    length: int
    target: int
    length_score: float
    adherence: float  # length / target
    within_10pct: bool
    repetition: float  # 0..1: share of n-grams that repeat an earlier one
    slop: float  # cliché hits per 1,000 words (en) or characters (zh)
    slop_hits: list[str] = Field(default_factory=list)
    continuity_issues: int = 0
    judge: dict[str, Any] = Field(default_factory=dict)  # {"pick": bool, "quality_score": int | None}


@functools.cache
def slop_phrases(language: str) -> tuple[str, ...]:
    doc = json.loads(
        resources.files("storyloom.apps.novel").joinpath("data/slop.json").read_text(encoding="utf-8")
    )
    return tuple(doc.get("zh" if language == "zh" else "en", ()))


def _grams(text: str, language: str) -> list[tuple[str, ...]]:
    if language == "zh":
        chars = _CJK.findall(text)
        return [tuple(chars[i : i + 4]) for i in range(len(chars) - 3)]
    words = [w.lower() for w in _WORD.findall(text)]
    return [tuple(words[i : i + 3]) for i in range(len(words) - 2)]


def ngram_repetition(text: str, language: str = "en") -> float:
    """The share of n-grams that already occurred earlier in the text (0: none repeat)."""
    grams = _grams(text, language)
    if not grams:
        return 0.0
    counts = Counter(grams)
    repeats = sum(c - 1 for c in counts.values())
    return round(repeats / len(grams), 4)


def slop_score(text: str, language: str = "en") -> tuple[float, list[str]]:
    """Cliché hits per 1,000 units, and the phrases found (each once, in list order)."""
    low = text.lower()
    hits: list[str] = []
    total = 0
    for phrase in slop_phrases(language):
        n = low.count(phrase.lower())
        if n:
            hits.append(phrase)
            total += n
    units = max(1, count_length(text, language))
    return round(1000.0 * total / units, 3), hits


def measure(
    text: str,
    *,
    target: int,
    language: str,
    continuity_issues: int = 0,
    judge: dict[str, Any] | None = None,
) -> QualityMeasures:
    length = count_length(text, language)
    slop, hits = slop_score(text, language)
    adherence = round(length / target, 4) if target > 0 else 0.0
    return QualityMeasures(
        length=length,
        target=target,
        length_score=length_score(length, target) if target > 0 else 0.0,
        adherence=adherence,
        within_10pct=0.9 <= adherence <= 1.1,
        repetition=ngram_repetition(text, language),
        slop=slop,
        slop_hits=hits,
        continuity_issues=continuity_issues,
        judge=dict(judge or {}),
    )


class ChapterEval(BaseModel):
    number: int
    length: int
    target: int
    length_score: float
    adherence: float
    repetition: float
    slop: float
    continuity_issues: int
    quality_score: int | None = None
    judge: dict[str, Any] = Field(default_factory=dict)


class Trend(BaseModel):
    first: float
    last: float
    slope: float  # change per chapter (least squares)
    degraded: bool  # the last quarter of the book is clearly worse than the first quarter


class BookEval(BaseModel):
    chapters: list[ChapterEval] = Field(default_factory=list)
    trend: dict[str, Trend] = Field(default_factory=dict)


def trend(values: Sequence[float], *, worse_when_higher: bool) -> Trend:
    """First, last, slope, and whether the last quarter is worse than the first by a clear margin
    (10% of the first quarter's mean, and at least 0.01 absolute)."""
    n = len(values)
    if n == 0:
        return Trend(first=0.0, last=0.0, slope=0.0, degraded=False)
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    var = sum((i - mean_x) ** 2 for i in range(n))
    slope = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / var if var else 0.0
    q = max(1, n // 4)
    head, tail = sum(values[:q]) / q, sum(values[-q:]) / q
    margin = max(0.01, 0.1 * abs(head))
    worse = (tail - head) if worse_when_higher else (head - tail)
    return Trend(first=values[0], last=values[-1], slope=round(slope, 5), degraded=n >= 4 and worse > margin)


def evaluate(rows: Sequence[ChapterEval]) -> BookEval:
    """Per chapter and the trend of each measure across the book."""
    ordered = sorted(rows, key=lambda r: r.number)
    metrics = {
        "length_score": [r.length_score for r in ordered],
        "adherence_error": [abs(1.0 - r.adherence) for r in ordered],
        "repetition": [r.repetition for r in ordered],
        "slop": [r.slop for r in ordered],
        "continuity_issues": [float(r.continuity_issues) for r in ordered],
    }
    scored = [float(r.quality_score) for r in ordered if r.quality_score is not None]
    if scored:
        metrics["quality_score"] = scored
    trends = {
        name: trend(values, worse_when_higher=name in _WORSE_WHEN_HIGHER or name == "adherence_error")
        for name, values in metrics.items()
    }
    return BookEval(chapters=list(ordered), trend=trends)


async def book_eval(
    store: Any, project_id: str, *, tenant: str = "default", numbers: Sequence[int] | None = None
) -> BookEval:
    """Every written chapter's chosen version, measured (stored measures, or computed now for
    versions written before measures existed)."""
    from storyloom.apps.novel.bookstore import BookStore

    books: BookStore = store
    found = await books.outline(project_id, tenant=tenant)
    language = "en"
    bible = await books.bible(project_id, tenant=tenant)
    if bible is not None:
        language = bible.bible.language
    rows: list[ChapterEval] = []
    for chosen in await books.chosen_versions(project_id, tenant=tenant):
        if numbers is not None and chosen.number not in numbers:
            continue
        scores = chosen.scores
        stored = scores.get("measures") if isinstance(scores.get("measures"), dict) else None
        outlined = found.outline.chapter(chosen.number) if found is not None else None
        target = int(
            (stored or {}).get("target")
            or (outlined.target_length if outlined else 0)
            or max(1, count_length(chosen.text, language))
        )
        m = (
            QualityMeasures.model_validate(stored)
            if stored
            else measure(chosen.text, target=target, language=language)
        )
        rows.append(
            ChapterEval(
                number=chosen.number,
                length=m.length,
                target=m.target,
                length_score=m.length_score,
                adherence=m.adherence,
                repetition=m.repetition,
                slop=m.slop,
                continuity_issues=m.continuity_issues or len(scores.get("continuity") or []),
                quality_score=scores.get("quality_score"),
                judge=m.judge or {"pick": bool(scores.get("judge_pick"))},
            )
        )
    return evaluate(rows)
