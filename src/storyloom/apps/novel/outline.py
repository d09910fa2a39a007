"""The outline of a whole book, written in bounded batches, with numbering guaranteed 1..N.

Asking for 200 chapters in one call gets a truncated answer that cannot be recovered, so the plan
flow asks for `batch_size` chapters at a time:

    bible ─▶ volumes ─▶ b1 ─▶ b2 ─▶ … ─▶ bk ─▶ coverage

Each batch is a durable step (a crash re-runs only the batch in flight) that sees the bible, the
volumes and every earlier batch's summaries; its failure policy is SKIP, so prose, a cut answer or
a refused call costs that batch only. The coverage step then checks the numbering (1..N, no gap,
no duplicate, every chapter summarized) and re-asks what is missing in small repair batches; a
chapter no repair could write gets a placeholder summary, listed in `CoverageReport.placeholders`
(reported, never passed off as written).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from storyloom.agents import AgentRun, RunServices
from storyloom.apps.novel.bible import StoryBible, _Loose, bible_step, render_bible
from storyloom.apps.novel.bookprompts import layout, schema_fence
from storyloom.apps.novel.models import DEFAULT_TARGET_LENGTH
from storyloom.flow import CheckpointStore, EventSink, Flow, OnError, StepContext, run_flow
from storyloom.llm.types import Usage

__all__ = [
    "MAX_CHAPTERS",
    "OUTLINE_BATCH",
    "BookOutline",
    "BookPlan",
    "BookPlanRequest",
    "CoverageReport",
    "OutlineChapter",
    "Volume",
    "check_coverage",
    "plan_book",
    "plan_flow",
]

OUTLINE_BATCH = 20
MAX_CHAPTERS = 500
_REPAIR_BATCH = 10
_RECENT_SUMMARIES = 30  # earlier chapters a batch sees in full; before those, titles only
_RECENT_TITLES = 90
_VOLUME_SIZE = 50  # chapters per volume when the model's volumes do not cover the book


class OutlineChapter(BaseModel):
    number: int = Field(ge=1, le=100_000)
    title: str = ""
    summary: str = ""
    beats: list[str] = Field(default_factory=list)
    pov: str = ""
    target_length: int = Field(default=1200, ge=100, le=20_000)
    volume: int = 1


class Volume(BaseModel):
    number: int
    title: str = ""
    summary: str = ""
    first: int
    last: int


class BookOutline(BaseModel):
    volumes: list[Volume] = Field(default_factory=list)
    chapters: list[OutlineChapter] = Field(default_factory=list)

    def chapter(self, number: int) -> OutlineChapter | None:
        return next((c for c in self.chapters if c.number == number), None)


class CoverageReport(BaseModel):
    """What the batches left (`missing`, `duplicates`, `unsummarized`) and what the coverage step did."""

    expected: int
    missing: list[int] = Field(default_factory=list)
    duplicates: list[int] = Field(default_factory=list)
    unsummarized: list[int] = Field(default_factory=list)
    repaired: list[int] = Field(default_factory=list)  # re-asked and written by a repair batch
    placeholders: list[int] = Field(default_factory=list)  # no repair answered: a stand-in summary
    failed_batches: list[int] = Field(default_factory=list)
    ok: bool = False  # the final outline numbers 1..N exactly once, each with a summary


class BookPlanRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str = Field(min_length=1, max_length=300)
    premise: str = Field(min_length=1, max_length=20_000)
    chapters: int = Field(ge=1, le=MAX_CHAPTERS)
    language: Literal["zh", "en"] = "en"
    genre: str = Field(default="", max_length=100)
    target_length: int | None = Field(default=None, ge=100, le=20_000)

    @property
    def length_goal(self) -> int:
        return self.target_length or DEFAULT_TARGET_LENGTH[self.language]


class BookPlan(BaseModel):
    bible: StoryBible
    outline: BookOutline
    coverage: CoverageReport
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    cache_hit_share: float = 0.0
    degraded: list[str] = Field(default_factory=list)


def check_coverage(outline: BookOutline, n: int) -> CoverageReport:
    """Numbering 1..n exactly once, each with a summary; anything else is listed."""
    seen: dict[int, int] = {}
    for c in outline.chapters:
        seen[c.number] = seen.get(c.number, 0) + 1
    missing = [i for i in range(1, n + 1) if i not in seen]
    duplicates = sorted(k for k, count in seen.items() if count > 1)
    extra = sorted(k for k in seen if not 1 <= k <= n)
    unsummarized = sorted({c.number for c in outline.chapters if not c.summary.strip()})
    return CoverageReport(
        expected=n,
        missing=missing,
        duplicates=sorted({*duplicates, *extra}),
        unsummarized=unsummarized,
        ok=not (missing or duplicates or extra or unsummarized),
    )


# -- what the model is asked for -----------------------------------------------------------------


class _Item(_Loose):
    number: int = Field(default=0, description="the chapter number")
    title: str = Field(default="", description="the chapter title")
    summary: str = Field(default="", description="what happens in the chapter, two or three sentences")
    beats: list[str] = Field(default_factory=list, description="the chapter's beats, in order")
    pov: str = Field(default="", description="the point-of-view character")


class _VolumeItem(_Loose):
    title: str = Field(default="", description="the volume's title")
    summary: str = Field(default="", description="the arc of the volume")
    first: int = Field(default=0, description="its first chapter")
    last: int = Field(default=0, description="its last chapter")


class _Volumes(_Loose):
    volumes: list[_VolumeItem] = Field(default_factory=list)


@functools.cache
def _batch_model(count: int) -> type[BaseModel]:
    """`{"chapters": [exactly count items]}`: a model per size, so the schema says how many."""
    items: Any = Field(default_factory=list, min_length=0, max_length=count * 2)
    return create_model(f"OutlineBatch{count}", __base__=_Loose, chapters=(list[_Item], items))


_T = {
    "zh": {
        "volumes": "请把这部{n}章的小说分成若干卷（每卷约{size}章）：每卷的标题、主线概要、起止章节号。",
        "batch": "请写出第{a}章到第{b}章（共{count}章，全书{n}章）的章节大纲：每章的章节号、标题、"
        "两三句话的概要、情节节拍和视角人物。与前面的章节紧密衔接，不要重复已写的情节。",
        "repair": "以下章节的大纲缺失：第{a}章到第{b}章（共{count}章）。请补写这些章节的大纲，"
        "承接前一章、引出后一章。",
        "so_far": "已有章节大纲",
        "earlier": "更早的章节",
        "volumes_label": "分卷",
        "next": "后一章",
    },
    "en": {
        "volumes": "Divide this {n}-chapter novel into volumes of about {size} chapters: each volume's "
        "title, the arc it covers, and its first and last chapter numbers.",
        "batch": "Outline chapters {a} to {b} ({count} chapters of {n}): for each, its number, title, a "
        "two- or three-sentence summary, its beats and its point-of-view character. Continue closely "
        "from the chapters before; do not repeat what they did.",
        "repair": "The outline is missing chapters {a} to {b} ({count} chapters). Write their outline, "
        "following from the chapter before and leading into the chapter after.",
        "so_far": "Outline so far",
        "earlier": "Earlier chapters",
        "volumes_label": "Volumes",
        "next": "Next chapter",
    },
}


def _lang(req: dict[str, Any]) -> str:
    return "zh" if req.get("language") == "zh" else "en"


def _shared(ctx: StepContext[Any]) -> str:
    """Bible and volumes: the same bytes for every batch of the book (a cached prompt prefix)."""
    bible = StoryBible.model_validate(ctx.inputs["bible"]["bible"])
    text = render_bible(bible)
    volumes = ctx.inputs.get("volumes")
    if isinstance(volumes, dict) and volumes.get("volumes"):
        lab = _T[_lang(ctx.run_input)]["volumes_label"]
        lines = [
            f"{v['number']}. {v['title']} ({v['first']}-{v['last']}): {v['summary']}"
            for v in volumes["volumes"]
        ]
        text += f"\n\n{lab}:\n" + "\n".join(lines)
    return text


def _line(c: dict[str, Any]) -> str:
    return f"{c['number']}. {c['title']}: {c['summary']}"


def _story_so_far(chapters: Sequence[dict[str, Any]], lang: str) -> str:
    """Bounded whatever the chapter number: recent summaries in full, older titles, then nothing."""
    if not chapters:
        return ""
    ordered = sorted(chapters, key=lambda c: c["number"])
    recent = ordered[-_RECENT_SUMMARIES:]
    older = ordered[:-_RECENT_SUMMARIES][-_RECENT_TITLES:]
    t = _T[lang]
    parts = []
    if older:
        parts.append(f"{t['earlier']}: " + "; ".join(f"{c['number']}. {c['title']}" for c in older))
    parts.append(f"{t['so_far']}:\n" + "\n".join(_line(c) for c in recent))
    return "\n".join(parts)


def _normalise(
    items: Sequence[Any], first: int, last: int, req: dict[str, Any], volumes: list[Volume]
) -> list[dict[str, Any]]:
    """The batch's chapters numbered within first..last: a number the model gave is kept when it is
    in range and unused, otherwise the next free number in order; anything beyond the range is dropped."""
    free = list(range(first, last + 1))
    used: set[int] = set()
    out: list[dict[str, Any]] = []
    goal = BookPlanRequest.model_validate(req).length_goal
    pending = []
    for item in items:
        n = item.number if first <= item.number <= last and item.number not in used else None
        if n is not None:
            used.add(n)
        pending.append((n, item))
    for n, item in pending:
        if n is None:
            n = next((k for k in free if k not in used), None)
            if n is None:
                break
            used.add(n)
        out.append(
            OutlineChapter(
                number=n,
                title=item.title.strip()[:300],
                summary=item.summary.strip(),
                beats=[b for b in item.beats if b.strip()][:20],
                pov=item.pov.strip()[:100],
                target_length=goal,
                volume=_volume_of(n, volumes),
            ).model_dump(mode="json")
        )
    return sorted(out, key=lambda c: c["number"])


def _volume_of(n: int, volumes: list[Volume]) -> int:
    return next((v.number for v in volumes if v.first <= n <= v.last), 1)


def _run(ctx: StepContext[Any]) -> dict[str, Any] | None:
    run = getattr(ctx.llm, "run", None)
    return run.model_dump(mode="json") if isinstance(run, AgentRun) else None


def even_volumes(n: int, drafts: Sequence[_VolumeItem] = ()) -> list[Volume]:
    """Volumes covering 1..n: the model's ranges when they tile the book, else an even split that
    keeps the model's titles and arcs in order."""
    ranges = sorted(
        ((d.first, d.last, d) for d in drafts if 1 <= d.first <= d.last <= n), key=lambda r: (r[0], r[1])
    )
    tiles = bool(ranges) and ranges[0][0] == 1 and ranges[-1][1] == n
    tiles = tiles and all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    if tiles:
        return [
            Volume(number=i, title=d.title, summary=d.summary, first=a, last=b)
            for i, (a, b, d) in enumerate(ranges, 1)
        ]
    count = max(1, math.ceil(n / _VOLUME_SIZE))
    size = math.ceil(n / count)
    out = []
    for i in range(count):
        d = drafts[i] if i < len(drafts) else _VolumeItem()
        out.append(
            Volume(
                number=i + 1,
                title=d.title,
                summary=d.summary,
                first=i * size + 1,
                last=min(n, (i + 1) * size),
            )
        )
    return out


async def _volumes(ctx: StepContext[Any]) -> dict[str, Any]:
    req = ctx.run_input
    lang, n = _lang(req), int(req["chapters"])
    task = _T[lang]["volumes"].format(n=n, size=_VOLUME_SIZE) + "\n\n" + schema_fence(_Volumes, lang)
    bible = StoryBible.model_validate(ctx.inputs["bible"]["bible"])
    drafted = await ctx.llm.json(layout(lang, render_bible(bible), task), schema=_Volumes, default=_Volumes)
    volumes = even_volumes(n, drafted.volumes)
    return {"volumes": [v.model_dump(mode="json") for v in volumes], "run": _run(ctx)}


def _earlier(ctx: StepContext[Any], names: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in names:
        value = ctx.inputs.get(name)
        if isinstance(value, dict):
            out.extend(value["chapters"])
    return out


def _batch_step(index: int, first: int, last: int, earlier: tuple[str, ...]) -> Any:
    async def batch(ctx: StepContext[Any]) -> dict[str, Any]:
        req = ctx.run_input
        lang, n, count = _lang(req), int(req["chapters"]), last - first + 1
        so_far = _story_so_far(_earlier(ctx, earlier), lang)
        ask = _T[lang]["batch"].format(a=first, b=last, count=count, n=n)
        model = _batch_model(count)
        task = "\n\n".join(
            p for p in (so_far, ask, schema_fence(model, lang, items=("chapters", count))) if p
        )
        # No default: an answer that is not the outline fails this batch (SKIP), and coverage repairs it.
        answer = await ctx.llm.json(
            layout(lang, _shared(ctx), task), schema=model, max_tokens=120 * count + 400
        )
        volumes = [Volume.model_validate(v) for v in ctx.inputs["volumes"]["volumes"]]
        chapters = _normalise(getattr(answer, "chapters", []), first, last, req, volumes)
        return {"batch": index, "first": first, "last": last, "chapters": chapters, "run": _run(ctx)}

    batch.__name__ = f"batch_{index}"
    return batch


def _placeholder(n: int, lang: str) -> dict[str, str]:
    if lang == "zh":
        return {"title": f"第{n}章", "summary": f"（占位）本章承接第{n - 1}章的情节，为第{n + 1}章做铺垫。"}
    return {"title": f"Chapter {n}", "summary": f"(placeholder) Bridges chapter {n - 1} and chapter {n + 1}."}


def _runs_of(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive numbers as (first, last) pieces of at most _REPAIR_BATCH."""
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1 and n - out[-1][0] < _REPAIR_BATCH:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def _coverage_step(batch_names: tuple[str, ...]) -> Any:
    async def coverage(ctx: StepContext[Any]) -> dict[str, Any]:
        req = ctx.run_input
        lang, n = _lang(req), int(req["chapters"])
        volumes = [Volume.model_validate(v) for v in ctx.inputs["volumes"]["volumes"]]
        failed = [i for i, name in enumerate(batch_names, 1) if not isinstance(ctx.inputs.get(name), dict)]
        by_number: dict[int, dict[str, Any]] = {}
        duplicates: set[int] = set()
        for c in _earlier(ctx, batch_names):
            if c["number"] in by_number:
                duplicates.add(c["number"])
                if by_number[c["number"]]["summary"].strip():
                    continue
            by_number[c["number"]] = c
        found = BookOutline(chapters=[OutlineChapter.model_validate(c) for c in by_number.values()])
        report = check_coverage(found, n)
        report.duplicates = sorted({*report.duplicates, *duplicates})
        report.failed_batches = failed
        todo = sorted({*report.missing, *report.unsummarized})
        for first, last in _runs_of(todo):
            count = last - first + 1
            near = [by_number[k] for k in range(max(1, first - _RECENT_SUMMARIES), first) if k in by_number]
            after = by_number.get(last + 1)
            so_far = _story_so_far(near, lang)
            if after is not None:
                so_far += f"\n{_T[lang]['next']}: {_line(after)}"
            model = _batch_model(count)
            ask = _T[lang]["repair"].format(a=first, b=last, count=count)
            task = "\n\n".join(
                p for p in (so_far, ask, schema_fence(model, lang, items=("chapters", count))) if p
            )
            try:
                answer = await ctx.llm.json(
                    layout(lang, _shared(ctx), task), schema=model, max_tokens=120 * count + 400
                )
            except Exception as exc:  # a repair that cannot answer leaves placeholders, reported below
                ctx.emit(
                    "outline.repair_failed", first=first, last=last, error=f"{type(exc).__name__}: {exc}"
                )
                continue
            for c in _normalise(getattr(answer, "chapters", []), first, last, req, volumes):
                if c["summary"].strip():
                    by_number[c["number"]] = c
                    report.repaired.append(c["number"])
        goal = BookPlanRequest.model_validate(req).length_goal
        for k in range(1, n + 1):
            if k not in by_number or not by_number[k]["summary"].strip():
                stand_in = _placeholder(k, lang)
                by_number[k] = OutlineChapter(
                    number=k, target_length=goal, volume=_volume_of(k, volumes), **stand_in
                ).model_dump(mode="json")
                report.placeholders.append(k)
        final = BookOutline(
            volumes=volumes,
            chapters=[OutlineChapter.model_validate(by_number[k]) for k in range(1, n + 1)],
        )
        report.ok = check_coverage(final, n).ok
        ctx.emit("outline.coverage", **report.model_dump(mode="json"))
        return {
            "outline": final.model_dump(mode="json"),
            "coverage": report.model_dump(mode="json"),
            "run": _run(ctx),
        }

    return coverage


@functools.cache
def plan_flow(chapters: int, batch_size: int = OUTLINE_BATCH) -> Flow:
    """bible → volumes → b1..bk (sequential, each SKIP on failure) → coverage."""
    if not 1 <= chapters <= MAX_CHAPTERS or batch_size < 1:
        raise ValueError(f"chapters must be 1..{MAX_CHAPTERS} and batch_size >= 1")
    flow = Flow(f"book-plan-{chapters}")
    flow.add("bible", bible_step)
    flow.add("volumes", _volumes, after=("bible",))
    names: list[str] = []
    for index, first in enumerate(range(1, chapters + 1, batch_size), start=1):
        last = min(chapters, first + batch_size - 1)
        name = f"b{index}"
        flow.add(
            name,
            _batch_step(index, first, last, tuple(names)),
            after=("bible", "volumes", *names),
            on_error=OnError.SKIP,
        )
        names.append(name)
    flow.add("coverage", _coverage_step(tuple(names)), after=("bible", "volumes", *names))
    return flow


async def plan_book(
    request: BookPlanRequest,
    *,
    run_id: str,
    services: RunServices,
    sink: EventSink | None = None,
    checkpoints: CheckpointStore | None = None,
    batch_size: int = OUTLINE_BATCH,
) -> BookPlan:
    """The bible and the outline of a book; safe to re-run with the same run_id (finished steps restored)."""
    result = await run_flow(
        plan_flow(request.chapters, batch_size),
        request.model_dump(mode="json"),
        run_id=run_id,
        sink=sink,
        checkpoints=checkpoints,
        services=services,
    )
    out = result.outputs
    usage, cost = Usage(), 0.0
    degraded: list[str] = []
    for name, value in out.items():
        run = value.get("run") if isinstance(value, dict) else None
        if isinstance(run, dict):
            agent = AgentRun.model_validate(run)
            usage, cost = usage.add(agent.usage), cost + agent.cost_usd
            if agent.degraded:
                degraded.append(f"{name}: {agent.degraded}")
    if out["bible"].get("degraded"):
        degraded.append(f"bible: {out['bible']['degraded']}")
    for name, exc in result.errors.items():
        degraded.append(f"{name}: {type(exc).__name__}: {exc}")
    coverage = CoverageReport.model_validate(out["coverage"]["coverage"])
    if coverage.placeholders:
        degraded.append(f"coverage: {len(coverage.placeholders)} chapters have placeholder summaries")
    return BookPlan(
        bible=StoryBible.model_validate(out["bible"]["bible"]),
        outline=BookOutline.model_validate(out["coverage"]["outline"]),
        coverage=coverage,
        usage=usage,
        cost_usd=round(cost, 8),
        cache_hit_share=round(usage.cached_tokens / usage.prompt_tokens, 4) if usage.prompt_tokens else 0.0,
        degraded=degraded,
    )
