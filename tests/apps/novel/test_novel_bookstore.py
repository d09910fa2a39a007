"""BookStore on SQLite and PostgreSQL: versioned bibles and outlines, memory revisions, tenancy."""

from __future__ import annotations

from storyloom.apps.novel.bible import BibleCharacter, StoryBible
from storyloom.apps.novel.bookstore import BookStore
from storyloom.apps.novel.memory import ChapterMemory, Foreshadow
from storyloom.apps.novel.outline import BookOutline, CoverageReport, OutlineChapter
from storyloom.apps.novel.projects import NewVersion, ProjectStore
from storyloom.store import Database


def _outline(titles: list[str]) -> BookOutline:
    return BookOutline(
        chapters=[OutlineChapter(number=i, title=t, summary=f"{t} happens") for i, t in enumerate(titles, 1)]
    )


async def test_versions_memory_and_tenancy(db: Database) -> None:
    projects, books = ProjectStore(db), BookStore(db)
    project = await projects.create_project(title="Road", tenant="t")
    one = await books.save_bible(project.id, StoryBible(premise="v1"), tenant="t", source="generated")
    two = await books.save_bible(
        project.id, StoryBible(premise="v2", characters=[BibleCharacter(name="Mara")]), tenant="t"
    )
    assert (one.version, two.version, one.source, two.source) == (1, 2, "generated", "edited")  # type: ignore[union-attr]
    latest = await books.bible(project.id, tenant="t")
    assert latest is not None and latest.bible.premise == "v2" and latest.bible.characters[0].name == "Mara"
    assert (await books.bible(project.id, tenant="t", version=1)).bible.premise == "v1"  # type: ignore[union-attr]
    assert [b.version for b in await books.bible_versions(project.id, tenant="t")] == [2, 1]
    assert await books.save_bible(project.id, StoryBible(), tenant="other") is None
    assert await books.bible(project.id, tenant="other") is None

    report = CoverageReport(expected=2, ok=True)
    await books.save_outline(project.id, _outline(["Dawn", "Dusk"]), tenant="t", coverage=report)
    second = await books.save_outline(project.id, _outline(["Dawn", "Night", "Day"]), tenant="t")
    assert second is not None and second.version == 2
    rows = await projects.list_chapters(project.id)
    assert [(c.index, c.title, c.outline) for c in rows] == [
        (1, "Dawn", "Dawn happens"),
        (2, "Night", "Night happens"),
        (3, "Day", "Day happens"),
    ]
    first = await books.outline(project.id, tenant="t", version=1)
    assert first is not None and first.coverage == report and len(first.outline.chapters) == 2
    assert await books.outline(project.id, tenant="other") is None

    (version,) = await projects.save_versions(
        rows[0].id, "j", [NewVersion(index=1, text="Mara woke.", scores={"a": 1})]
    )
    assert await books.chosen_text(project.id, 1, tenant="t") is None  # written, not chosen
    await projects.choose_version(rows[0].id, version.id)
    chosen = await books.chosen_text(project.id, 1, tenant="t")
    assert chosen is not None and (chosen.text, chosen.version_id, chosen.scores) == (
        "Mara woke.",
        version.id,
        {"a": 1},
    )
    assert await books.chosen_text(project.id, 1, tenant="other") is None

    opened = ChapterMemory(summary="s1", foreshadowing=[Foreshadow(key="coin", action="opened")])
    await books.save_memory(project.id, 1, opened, tenant="t", version_id=version.id)
    await books.save_memory(project.id, 1, ChapterMemory(summary="s1b"), tenant="t")
    await books.save_memory(
        project.id,
        2,
        ChapterMemory(summary="s2", foreshadowing=[Foreshadow(key="Coin", action="paid_off")]),
        tenant="t",
    )
    assert [(m.number, m.revision, m.memory.summary) for m in await books.memory(project.id, tenant="t")] == [
        (1, 2, "s1b"),
        (2, 1, "s2"),
    ]
    assert [m.number for m in await books.memory(project.id, tenant="t", upto=2)] == [1]
    assert await books.save_memory(project.id, 9, ChapterMemory(), tenant="t") is None  # no chapter 9
    assert await books.save_memory(project.id, 1, ChapterMemory(), tenant="other") is None
    assert await books.open_foreshadowing(project.id, tenant="t") == []  # revision 2 replaced the opening
