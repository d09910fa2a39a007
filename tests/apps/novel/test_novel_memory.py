"""Story memory: extracted from the chosen version against the simulator, versioned, folded into
the open-foreshadowing ledger and the character sheets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from book_support import database, http_client, services

from storyloom.apps.novel.bible import BibleCharacter, StoryBible
from storyloom.apps.novel.bookstore import BookStore
from storyloom.apps.novel.memory import (
    ChapterMemory,
    CharacterChange,
    Foreshadow,
    MemoryRecord,
    character_sheets,
    open_threads,
    remember_chapter,
)
from storyloom.apps.novel.projects import NewVersion, ProjectStore


def _record(number: int, memory: ChapterMemory) -> MemoryRecord:
    return MemoryRecord(
        id=str(number),
        project_id="p",
        chapter_id=str(number),
        number=number,
        version_id=None,
        revision=1,
        memory=memory,
        created_at=0.0,
    )


def test_ledger_and_sheets_fold_the_chapters_in_order() -> None:
    records = [
        _record(
            1,
            ChapterMemory(
                foreshadowing=[Foreshadow(key="The Coin", action="opened", detail="a coin", due_chapter=4)],
                character_changes=[CharacterChange(name="Olen", location="Port Vell")],
            ),
        ),
        _record(
            2,
            ChapterMemory(
                foreshadowing=[
                    Foreshadow(key="the coin", action="advanced", detail="it burns"),
                    Foreshadow(key="Map", action="opened", detail="a map"),
                ]
            ),
        ),
        _record(
            3,
            ChapterMemory(
                foreshadowing=[Foreshadow(key="map", action="paid_off")],
                character_changes=[CharacterChange(name="Olen", condition="killed by the tide")],
            ),
        ),
    ]
    threads = open_threads(records, at_chapter=3)
    assert [(t.key, t.opened_in, t.advanced_in, t.detail, t.due) for t in threads] == [
        ("The Coin", 1, [2], "it burns", True)
    ]
    bible = StoryBible(characters=[BibleCharacter(name="Olen", role="ferryman")])
    (olen,) = character_sheets(bible, records)
    assert (olen.role, olen.location, olen.alive, olen.died_in, olen.last_seen) == (
        "ferryman",
        "Port Vell",
        False,
        3,
        3,
    )


async def test_remember_chapter_extracts_from_the_chosen_version_and_versions_rows(
    tmp_path: Path, sim: Any
) -> None:
    db = await database(tmp_path)
    client = http_client(sim)
    try:
        projects, books = ProjectStore(db), BookStore(db)
        project = await projects.create_project(title="Road", tenant="t")
        bible = StoryBible(language="en", characters=[BibleCharacter(name="Mara", role="courier")])
        await books.save_bible(project.id, bible, tenant="t")
        chapter = await projects.upsert_chapter(project.id, index=1, title="One", outline="Mara leaves.")
        text = "Mara left Port Vell at dawn. She carried a coin that burned in her palm. Nobody followed her."
        saved = await projects.save_versions(chapter.id, "job", [NewVersion(index=1, text=text, scores={})])
        assert (
            await remember_chapter(
                books, project_id=project.id, number=1, tenant="t", services=services(client), run_id="m0"
            )
            is None
        )
        await projects.choose_version(chapter.id, saved[0].id)
        first = await remember_chapter(
            books, project_id=project.id, number=1, tenant="t", services=services(client), run_id="m1"
        )
        again = await remember_chapter(
            books, project_id=project.id, number=1, tenant="t", services=services(client), run_id="m2"
        )
        assert first is not None and again is not None
        assert (first.revision, again.revision, first.version_id) == (1, 2, saved[0].id)
        assert first.memory.summary and first.memory.character_changes  # the simulator answered the schema
        assert [m.revision for m in await books.memory(project.id, tenant="t")] == [2]  # the latest only
        assert len(await books.memory_history(project.id, 1, tenant="t")) == 2
        assert (await projects.get_chapter(chapter.id)).summary == again.memory.summary  # type: ignore[union-attr]
        assert await books.memory(project.id, tenant="other") == []
        sheets = await books.character_sheets(project.id, tenant="t")
        assert "Mara" in {s.name for s in sheets}
    finally:
        await client.aclose()
        await db.close()


async def test_book_eval_reads_the_stored_measures_of_chosen_versions(tmp_path: Path) -> None:
    from storyloom.apps.novel.outline import BookOutline, OutlineChapter
    from storyloom.apps.novel.quality import book_eval, measure

    db = await database(tmp_path)
    try:
        projects, books = ProjectStore(db), BookStore(db)
        project = await projects.create_project(title="Road", tenant="t")
        await books.save_bible(project.id, StoryBible(language="en"), tenant="t")
        outline = BookOutline(
            chapters=[OutlineChapter(number=k, summary="s", target_length=100) for k in range(1, 5)]
        )
        await books.save_outline(project.id, outline, tenant="t")
        for k in range(1, 5):
            chapter = await projects.upsert_chapter(project.id, index=k)
            text = "She walked to the gate. " * 20 if k == 4 else " ".join(f"word{i}" for i in range(100))
            scores = {"measures": measure(text, target=100, language="en").model_dump(), "quality_score": 80}
            (saved,) = await projects.save_versions(
                chapter.id, f"j{k}", [NewVersion(index=1, text=text, scores=scores)]
            )
            if k != 3:  # chapter 3 is written but not chosen: not in the book
                await projects.choose_version(chapter.id, saved.id)
        report = await book_eval(books, project.id, tenant="t")
        assert [c.number for c in report.chapters] == [1, 2, 4]
        assert report.chapters[0].repetition == 0.0 and report.chapters[-1].repetition > 0.8
        assert report.trend["repetition"].last > report.trend["repetition"].first
        assert (await book_eval(books, project.id, tenant="other")).chapters == []
    finally:
        await db.close()
