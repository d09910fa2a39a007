"""The context builder: within its budget at any chapter number, with the parts each chapter needs."""

from __future__ import annotations

from pathlib import Path

from book_support import database

from storyloom.apps.novel.bible import BibleCharacter, Location, StoryBible, World
from storyloom.apps.novel.bookstore import BookStore
from storyloom.apps.novel.context import ContextBudget, build_context, chapter_request
from storyloom.apps.novel.memory import ChapterMemory, CharacterChange, Foreshadow, MemoryRecord
from storyloom.apps.novel.outline import BookOutline, OutlineChapter
from storyloom.apps.novel.projects import ProjectStore
from storyloom.llm.tokens import estimate_tokens


def _bible() -> StoryBible:
    cast = [
        BibleCharacter(name=f"Hero{i}", role="ally", traits=["brave"] * 5, goals="win " * 40)
        for i in range(60)
    ]
    cast.insert(0, BibleCharacter(name="Mara", role="courier", goals="deliver the last letter"))
    return StoryBible(
        premise="A courier crosses a broken empire. " * 30,
        language="en",
        world=World(setting="A drowned empire. " * 50, rules=["No magic at sea."] * 20),
        locations=[Location(name=f"Port{i}", description="a harbor " * 10) for i in range(40)],
        characters=cast,
    )


def _outline(n: int) -> BookOutline:
    return BookOutline(
        chapters=[
            OutlineChapter(
                number=k,
                title=f"Chapter {k}",
                summary=f"Mara reaches Port{k % 40} with the lighthouse key." * 3,
            )
            for k in range(1, n + 1)
        ]
    )


def _memory(upto: int) -> list[MemoryRecord]:
    out = []
    for k in range(1, upto):
        memory = ChapterMemory(
            summary=(
                "Mara hides the lighthouse key under the chapel."
                if k == 7
                else f"Mara rides through valley {k}. "
            )
            * 6,
            character_changes=[
                CharacterChange(name="Mara", location=f"Port{k % 40}", knowledge=[f"fact {k}"])
            ],
            foreshadowing=[
                Foreshadow(
                    key=f"thread {k}", action="opened", detail="a stranger's coin " * 5, due_chapter=k + 2
                )
            ],
        )
        out.append(
            MemoryRecord(
                id=str(k),
                project_id="p",
                chapter_id=str(k),
                number=k,
                version_id=None,
                revision=1,
                memory=memory,
                created_at=0.0,
            )
        )
    return out


def test_context_stays_within_budget_at_chapters_1_10_and_200() -> None:
    bible, outline = _bible(), _outline(300)
    budget = ContextBudget(total_tokens=3000)
    memory = _memory(200)
    sizes = {}
    for number in (1, 10, 200):
        pack = build_context(
            bible, outline, memory, number, previous_text="The last paragraph. " * 400, budget=budget
        )
        assert pack.tokens <= budget.total_tokens == pack.budget
        assert estimate_tokens(pack.render()) == pack.tokens
        assert "Mara" in pack.section("characters") and pack.section("chapter")
        sizes[number] = pack.tokens
        if number > 1:
            assert (
                pack.section("recent")
                and pack.section("seam").startswith("The last")
                and pack.section("seam").endswith("The last paragraph.")
            )
            assert f"{number - 1}." in pack.section("recent")
    assert sizes[200] <= budget.total_tokens and sizes[10] <= budget.total_tokens
    late = build_context(bible, outline, memory, 200, budget=ContextBudget(total_tokens=50_000))
    assert "7. Mara hides the lighthouse key" in late.section("retrieved")  # BM25: the key's chapter
    assert late.section("foreshadowing") and "thread 199" in late.section("foreshadowing")


async def test_chapter_request_reads_memory_when_called(tmp_path: Path) -> None:
    db = await database(tmp_path)
    try:
        project = await ProjectStore(db).create_project(title="Road", tenant="t")
        books = BookStore(db)
        await books.save_bible(project.id, _bible(), tenant="t")
        await books.save_outline(project.id, _outline(3), tenant="t")
        first, _ = await chapter_request(books, project.id, 2, tenant="t")
        assert (
            first.previous_summary is None and "## The previous chapter ended" not in first.input.book_context
        )
        assert await books.save_memory(project.id, 1, ChapterMemory(summary="Mara lost the key."), tenant="t")
        later, pack = await chapter_request(books, project.id, 2, tenant="t")
        assert later.previous_summary == "Mara lost the key." and "Mara lost the key." in pack.section(
            "recent"
        )
        assert await books.bible(project.id, tenant="other") is None
        stranger, _ = await chapter_request(books, project.id, 2, tenant="other")
        assert "Mara" not in stranger.input.book_context and stranger.previous_summary is None
    finally:
        await db.close()


def test_a_chinese_context_stays_within_budget() -> None:
    from storyloom.apps.novel.bible import StoryBible as Bible

    bible = Bible(
        language="zh", premise="少年林凡学剑。" * 200, characters=[BibleCharacter(name="林凡", role="主角")]
    )
    outline = BookOutline(
        chapters=[
            OutlineChapter(number=k, title=f"第{k}章", summary="林凡下山历练。" * 20) for k in range(1, 201)
        ]
    )
    memory = [
        MemoryRecord(
            id=str(k),
            project_id="p",
            chapter_id=str(k),
            number=k,
            version_id=None,
            revision=1,
            memory=ChapterMemory(summary="林凡与师兄比剑，胜负未分。" * 10),
            created_at=0.0,
        )
        for k in range(1, 200)
    ]
    pack = build_context(
        bible,
        outline,
        memory,
        200,
        previous_text="林凡收剑入鞘。" * 500,
        budget=ContextBudget(total_tokens=1500),
    )
    assert pack.tokens <= 1500 and "【本章大纲】" in pack.render() and "林凡" in pack.section("characters")
    assert pack.section("seam").endswith("林凡收剑入鞘。")
