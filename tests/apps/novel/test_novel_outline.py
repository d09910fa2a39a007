"""The book's plan (bible + outline in batches + coverage) against the simulator over loopback HTTP."""

from __future__ import annotations

import re
from typing import Any

from book_support import Router, http_client, services

from storyloom.apps.novel.outline import (
    BookOutline,
    BookPlanRequest,
    OutlineChapter,
    check_coverage,
    plan_book,
)
from storyloom.flow import MemoryCheckpoints


def test_coverage_finds_gaps_duplicates_and_blank_summaries() -> None:
    chapters = [OutlineChapter(number=n, summary="s") for n in (1, 2, 2, 4)] + [OutlineChapter(number=5)]
    report = check_coverage(BookOutline(chapters=chapters), 6)
    assert (report.missing, report.duplicates, report.unsummarized, report.ok) == ([3, 6], [2], [5], False)
    whole = BookOutline(chapters=[OutlineChapter(number=n, summary="s") for n in range(1, 4)])
    assert check_coverage(whole, 3).ok


async def test_300_chapters_with_a_failing_and_a_prose_batch_are_repaired(sim: Any) -> None:
    sim.configure(
        models={
            "sim-broken": {"faults": {"error_5xx": 1.0}},
            "sim-prose": {"faults": {"prose_only": 1.0}},
        }
    )

    def rule(text: str) -> str | None:
        if re.search(r"Outline chapters 61 to 80\b", text):
            return "sim-broken"
        if re.search(r"Outline chapters 121 to 140\b", text):
            return "sim-prose"
        return None

    client = Router(http_client(sim), rule)
    request = BookPlanRequest(
        title="The Long Road", premise="Mara, a courier, crosses a broken empire.", chapters=300
    )
    checkpoints = MemoryCheckpoints()
    try:
        plan = await plan_book(request, run_id="plan", services=services(client), checkpoints=checkpoints)
    finally:
        await client.aclose()
    assert "sim-broken" in client.routed and "sim-prose" in client.routed
    numbers = [c.number for c in plan.outline.chapters]
    assert numbers == list(range(1, 301))
    assert all(c.summary.strip() for c in plan.outline.chapters)
    assert plan.coverage.ok and plan.coverage.failed_batches == [4, 7]
    lost = set(range(61, 81)) | set(range(121, 141))
    assert set(plan.coverage.missing) == lost
    assert set(plan.coverage.repaired) == lost and not plan.coverage.placeholders
    assert check_coverage(plan.outline, 300).ok
    assert plan.bible.premise == request.premise and plan.bible.characters
    assert plan.outline.volumes[0].first == 1 and plan.outline.volumes[-1].last == 300
    assert any("b4" in d for d in plan.degraded) and any("b7" in d for d in plan.degraded)


async def test_a_crash_mid_outline_costs_only_the_batch_in_flight(sim: Any) -> None:
    """Cancel the plan while batch 3 runs; the re-run with the same run_id restores bible, volumes,
    b1, b2 from checkpoints and asks only for batches 3.. again."""
    import asyncio
    import contextlib

    asked: list[str] = []
    started = asyncio.Event()

    def rule(text: str) -> str | None:
        found = re.search(r"Outline chapters (\d+) to", text)
        if found:
            asked.append(found.group(1))
            if found.group(1) == "41":
                started.set()
        return None

    client = Router(http_client(sim), rule)
    request = BookPlanRequest(title="Road", premise="Mara crosses the empire.", chapters=100)
    checkpoints = MemoryCheckpoints()
    try:
        run = asyncio.create_task(
            plan_book(request, run_id="crash", services=services(client), checkpoints=checkpoints)
        )
        async with asyncio.timeout(30):
            await started.wait()
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        before = list(asked)
        assert before[:3] == ["1", "21", "41"]
        plan = await plan_book(request, run_id="crash", services=services(client), checkpoints=checkpoints)
    finally:
        await client.aclose()
    assert asked[len(before) :] == ["41", "61", "81"]  # b1 and b2 were not asked again
    assert plan.coverage.ok and [c.number for c in plan.outline.chapters] == list(range(1, 101))


async def test_a_chinese_book_plan_is_chinese_and_complete(sim: Any) -> None:
    client = http_client(sim)
    request = BookPlanRequest(
        title="剑歌", premise="少年林凡在乱世中学剑，寻找失踪的师父。", chapters=45, language="zh"
    )
    try:
        plan = await plan_book(request, run_id="zh", services=services(client), batch_size=20)
    finally:
        await client.aclose()
    assert plan.coverage.ok and [c.number for c in plan.outline.chapters] == list(range(1, 46))
    assert plan.bible.language == "zh" and all(c.target_length == 2000 for c in plan.outline.chapters)
    text = "".join(c.summary for c in plan.outline.chapters)
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > 0.5 * len(text)
