"""Quality per chapter and its trend across the book: does chapter 20 degrade against chapter 1?

Reads the measures stored with each chosen version (the data layer's `scores["measures"]`:
length score, n-gram repetition, slop, continuity issues, judge) and, for versions written before
those existed, what the chapter flow stored (length score, quality score, issues)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from storyloom.apps.novel.projects import Project, ProjectStore
from storyloom.store.database import Database

__all__ = ["METRICS", "ChapterQuality", "book_quality"]

# metric -> True when higher is better
METRICS = {
    "length_score": True,
    "quality_score": True,
    "repetition": False,
    "slop": False,
    "continuity_issues": False,
}


@dataclass(frozen=True, slots=True)
class ChapterQuality:
    number: int
    length: int
    target_length: int | None
    length_score: float | None
    quality_score: float | None
    repetition: float | None
    slop: float | None
    continuity_issues: int | None
    judge_pick: bool | None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _slope(points: list[tuple[int, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


async def book_quality(db: Database, book: Project) -> dict[str, Any]:
    store = ProjectStore(db)
    rows: list[ChapterQuality] = []
    for chapter in await store.list_chapters(book.id):
        chosen = next((v for v in await store.list_versions(chapter.id) if v.chosen), None)
        if chosen is None:
            continue
        s = chosen.scores
        raw = s.get("measures")
        m: dict[str, Any] = raw if isinstance(raw, dict) else {}
        issues = m.get("continuity_issues")
        rows.append(
            ChapterQuality(
                number=chapter.index,
                length=int(_num(m.get("length", s.get("length"))) or 0),
                target_length=int(t) if (t := _num(m.get("target", s.get("target_length")))) else None,
                length_score=_num(m.get("length_score", s.get("length_score"))),
                quality_score=_num(s.get("quality_score")),
                repetition=_num(m.get("repetition")),
                slop=_num(m.get("slop")),
                continuity_issues=int(issues) if isinstance(issues, int) else None,
                judge_pick=s.get("judge_pick") if isinstance(s.get("judge_pick"), bool) else None,
            )
        )
    trend: dict[str, Any] = {}
    for metric, higher_better in METRICS.items():
        points = [(r.number, v) for r in rows if (v := getattr(r, metric)) is not None]
        if not points:
            trend[metric] = None  # not measured for this book's versions
            continue
        slope = _slope([(x, float(y)) for x, y in points])
        first, last = float(points[0][1]), float(points[-1][1])
        worse = last < first if higher_better else last > first
        trend[metric] = {
            "first": first,
            "last": last,
            "slope": round(slope, 6),
            "degraded": bool(worse and (slope < 0 if higher_better else slope > 0)),
        }
    return {"book_id": book.id, "chapters": [asdict(r) for r in rows], "trend": trend}
