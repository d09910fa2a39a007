"""`apps.novel.projects.ProjectStore` on both databases: the same statements on SQLite and PostgreSQL."""

from __future__ import annotations

from storyloom.apps.novel.projects import NewVersion, ProjectStore, versions_from_result
from storyloom.jobs.queue import JobQueue
from storyloom.store.database import Database


async def test_projects_chapters_versions_on_both_databases(db: Database) -> None:
    store = ProjectStore(db)
    project = await store.create_project(title="T", premise="p", characters=[{"name": "A"}], tenant="t1")
    assert await store.get_project(project.id, tenant="other") is None
    first = await store.upsert_chapter(project.id, index=None, outline="one")
    second = await store.upsert_chapter(project.id, index=None, outline="two")
    assert (first.index, second.index) == (1, 2)
    same = await store.upsert_chapter(project.id, index=1, outline="one, revised")
    assert same.id == first.id and same.outline == "one, revised"

    job = await JobQueue(db).submit("novel", {"chapter_id": first.id, "input": {}}, tenant="t1")
    assert await store.chapter_job_ids(first.id) == [job.id]
    assert await store.chapter_job_ids(second.id) == []

    result = {
        "versions": [{"index": 1, "text": "a", "ok": True}, {"index": 2, "text": "", "ok": False}],
        "chosen": 1,
        "summary": "s",
    }
    versions, summary = versions_from_result(result)
    assert [v.index for v in versions] == [1] and summary == "s"
    await store.save_versions(first.id, job.id, versions, summary=summary)
    again = await store.save_versions(first.id, job.id, [NewVersion(1, "a2", {}), NewVersion(2, "b", {})])
    assert [(v.index, v.text) for v in again] == [(1, "a2"), (2, "b")]  # a re-run overwrites its own
    chosen = await store.choose_version(first.id, again[1].id)
    assert chosen is not None and chosen.chosen
    assert [v.chosen for v in await store.list_versions(first.id)] == [False, True]
    assert await store.previous_summary(project.id, 2) == "s"
    assert await store.choose_version(second.id, again[0].id) is None  # not that chapter's version

    assert await store.delete_project(project.id, tenant="t1")
    assert await store.list_chapters(project.id) == []
    assert await store.list_versions(first.id) == []
